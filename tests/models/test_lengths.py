"""A prompt plus its generation must fit the LM's positions: checked before any weight loads
(icet.lengths). A 100,000-character prompt took the toy past 5 GB in 15 s before."""

import json
from pathlib import Path

import pytest
from PIL import Image

import icet.models.loading as loading
from icet.config import load_config
from icet.errors import IcetError
from icet.sweep import run_sweep_job
from tiny_models import build_tiny_llava

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files

LONG = "what is in the picture ? " * 4000  # 100,000 characters, 24,000 tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("lengths") / "model")


def dataset(folder: Path, prompts: list[str]) -> Path:
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.png")
    rows = [{"id": f"cp-{i}", "prompt": p, "image": "a.png", "kind": "harmful", "category": "c",
             "answer": None, "source": "s"} for i, p in enumerate(prompts)]
    path = folder / "cp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def no_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_adapter", refuse)


def sweep(model_dir, data, tmp_path, **settings):
    return run_sweep_job(model_dir, data, [1], tmp_path / "out" / "chunk-00.json",
                         model_name="m", variant="original", testset="cp", batch_size=2,
                         **settings)


def test_the_tiny_models_positions_are_read_from_its_config(model_dir):
    from icet.lengths import max_positions

    assert max_positions(model_dir) == 256  # text_config.max_position_embeddings


def test_a_prompt_past_the_models_positions_stops_before_loading(model_dir, tmp_path, no_loading):
    data = dataset(tmp_path, ["what is in the picture ?", LONG])
    with pytest.raises(IcetError) as err:
        sweep(model_dir, data, tmp_path, max_new_tokens=8)
    assert str(err.value).startswith(f"{data}: row 2 (cp-1): prompt is ")
    assert "positions" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_max_new_tokens_past_the_positions_stops_at_job_start(model_dir, tmp_path, no_loading):
    data = dataset(tmp_path, ["what is in the picture ?"])
    with pytest.raises(IcetError) as err:
        sweep(model_dir, data, tmp_path, max_new_tokens=100000)
    assert str(err.value) == (f"generation.max_new_tokens: 100000 leaves no room for a prompt in "
                              f"the model's 256 positions ({model_dir}/config.json); set it below 256")


def test_a_prompt_that_fits_with_its_generation_passes(model_dir, tmp_path):
    data = dataset(tmp_path, ["what is in the picture ? " * 40])  # 240 tokens + 8 < 256
    assert sweep(model_dir, data, tmp_path, max_new_tokens=8) == [1]


def test_the_toy_config_refuses_an_absurd_generation_length(tmp_path):
    extra = tmp_path / "long.yaml"
    extra.write_text("generation: {max_new_tokens: 100000}\n")
    with pytest.raises(IcetError) as err:
        load_config(REPO_ROOT / "config.yaml", REPO_ROOT / "toy" / "toy.yaml", extra)
    assert ("key 'generation.max_new_tokens': 100000 leaves no room for a prompt in the model's "
            "256 positions (the toy LM's toy.arch.max_positions)") in str(err.value)
    extra.write_text("lppo: {max_new_tokens: 300}\n")
    with pytest.raises(IcetError, match="key 'lppo.max_new_tokens': 300 leaves no room"):
        load_config(REPO_ROOT / "config.yaml", REPO_ROOT / "toy" / "toy.yaml", extra)


def test_lppo_checks_its_training_prompts_before_loading(model_dir, tmp_path, monkeypatch):
    import icet.lppo.trainer as trainer
    from icet.lppo.launch import run_lppo_job

    monkeypatch.setattr(trainer, "train_lppo_job", lambda *a, **k: pytest.fail("trained"))
    data = dataset(tmp_path, ["what is in the picture ?", LONG])
    with pytest.raises(IcetError, match=r"cp.jsonl: row 2 \(cp-1\): prompt is \d+ tokens; with "
                                        r"lppo.max_new_tokens = 8"):
        run_lppo_job(str(model_dir), str(data), str(tmp_path / "lppo"), params={"max_new_tokens": 8},
                     reward_model_dir=str(tmp_path))
