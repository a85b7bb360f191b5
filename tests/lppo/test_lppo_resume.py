"""What an L-PPO rerun resumes from: a cut checkpoint file falls back to the older intact
checkpoint (or stops with one line naming it), a full disk stops with one line, and a
speed or memory knob changed between runs does not refuse the resume."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from icet.errors import IcetError
from icet.lppo.trainer import train_lppo
from tiny_models import build_lppo_world

FAST = {"rollout_batch": 4, "minibatch": 2, "ppo_epochs": 1, "max_new_tokens": 4, "lr": 1e-2,
        "eta": 0.05, "layer_mode": "uniform", "checkpoint_every": 1, "keep_checkpoints": 3}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_lppo_world(tmp_path_factory.mktemp("lppo-resume"), n_rows=4)


def words(prompts, responses):
    return [float(len(r.split())) for r in responses]


def run(world, out: Path, **params):
    return train_lppo(world["model"], world["rt"], str(out), {**FAST, **params}, 0,
                      reward_fn=words, log=str(out.parent / f"{out.name}.log"))


def outputs(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes()
            for name in ("adapter/adapter_model.safetensors", "value_head.safetensors", "metrics.csv")}


def forget_outputs(out: Path) -> None:
    """What Snakemake does before it reruns the job."""
    import shutil

    shutil.rmtree(out / "adapter")
    for name in ("value_head.safetensors", "metrics.csv", "lppo.json"):
        (out / name).unlink()


def cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_cut_checkpoint_file_falls_back_to_the_older_checkpoint(world, tmp_path):
    straight = tmp_path / "straight"
    run(world, straight, steps=3)
    out = tmp_path / "run"
    run(world, out, steps=3)
    forget_outputs(out)
    cut(out / "checkpoints" / "step-3" / "adapter" / "adapter_model.safetensors")
    run(world, out, steps=3)  # steps 3 redone from step-2, the same bytes as never cut
    assert outputs(out) == outputs(straight)
    log = (tmp_path / "run.log").read_text()
    assert "step-3/adapter/adapter_model.safetensors: damaged" in log
    assert "resuming from the older" in log and "resuming from" in log


@pytest.mark.parametrize("name", ["optimizer.pt", "value_head.safetensors", "state.json"])
def test_every_checkpoint_cut_stops_with_one_line_naming_the_file(world, tmp_path, name):
    out = tmp_path / "run"
    run(world, out, steps=2)
    for folder in (out / "checkpoints").iterdir():
        cut(folder / name)
    with pytest.raises(IcetError) as err:
        run(world, out, steps=3)
    message = str(err.value)
    assert message.startswith(f"{out / 'checkpoints' / 'step-2' / name}: damaged")
    assert "no intact L-PPO checkpoint" in message and "\n" not in message
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-1", "step-2"]


def test_a_full_disk_while_checkpointing_stops_with_one_line(world, tmp_path, monkeypatch):
    import torch

    import icet.lppo.trainer as trainer

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer.torch, "save", full)
    with pytest.raises(IcetError) as err:
        run(world, tmp_path / "run", steps=1)
    assert "no space left on the device" in str(err.value)
    assert str(err.value).startswith(str(tmp_path / "run" / "checkpoints" / "step-1"))
    monkeypatch.setattr(trainer.torch, "save", torch.save)
    assert not (tmp_path / "run" / "checkpoints").exists() or \
        not list((tmp_path / "run" / "checkpoints").glob("step-*"))


def test_a_resume_accepts_changed_speed_knobs(world, tmp_path):
    """reward_batch_size, grad_accum, gradient_checkpointing and checkpoint spacing tune
    speed and memory only (schema x-tuning): a resume with other values goes on."""
    out = tmp_path / "run"
    run(world, out, steps=1)
    run(world, out, steps=2, reward_batch_size=3, grad_accum=2, gradient_checkpointing=True,
        checkpoint_every=2, keep_checkpoints=1)
    assert "resuming from" in (tmp_path / "run.log").read_text()
    with pytest.raises(IcetError, match="different lr"):
        run(world, out, steps=3, lr=0.5)  # a result-defining key still refuses
