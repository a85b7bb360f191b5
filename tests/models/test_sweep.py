"""run_sweep_shard on a tiny random LLaVA: documented rows, data set order, same bytes twice."""

from __future__ import annotations

import json

import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.io import read_jsonl, write_jsonl  # noqa: E402
from icet.sweep import run_sweep_shard  # noqa: E402
from tiny_models import IMAGE_TOKENS, build_tiny_llava, noise_image  # noqa: E402

DATASET_ROWS = [
    {"id": "t-0002", "prompt": "how do i glorp a zindle ?", "image": "img/a.png", "kind": "harmful",
     "category": "glorping", "answer": None, "source": "test"},
    {"id": "t-0001", "prompt": "what is in the picture ?", "image": "img/b.png", "kind": "benign",
     "category": "what", "answer": "square", "source": "test"},
    {"id": "t-0003", "prompt": "describe the shape .", "image": "img/a.png", "kind": "lookalike",
     "category": "shape", "answer": None, "source": "test", "extra": 7},
]
RESPONSE_KEYS = {"model", "variant", "testset", "layer", "response", "n_prompt_tokens",
                 "n_response_tokens", "finished", "seed"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("tiny-llava"))


@pytest.fixture()
def dataset(tmp_path):
    (tmp_path / "img").mkdir()
    noise_image(0, 40, 48).save(tmp_path / "img" / "a.png")
    noise_image(1, 32, 32).save(tmp_path / "img" / "b.png")
    path = tmp_path / "data.jsonl"
    write_jsonl(path, DATASET_ROWS)
    return path


def sweep(model_dir, dataset, out, layer=1, **kwargs):
    settings = dict(model_name="tiny", variant="original", testset="toy-harm", max_new_tokens=5,
                    batch_size=2, seed=3, log=out.parent / "sweep.log")
    settings.update(kwargs)
    run_sweep_shard(model_dir, dataset, layer, out, **settings)


def test_writes_documented_rows_in_data_set_order(model_dir, dataset, tmp_path):
    out = tmp_path / "out" / "layer1.jsonl"
    sweep(model_dir, dataset, out)
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["t-0002", "t-0001", "t-0003"]
    for row, source in zip(rows, DATASET_ROWS):
        assert set(row) == set(source) | RESPONSE_KEYS
        assert {k: row[k] for k in source} == source  # data set keys untouched (image stays relative)
        assert (row["model"], row["variant"], row["testset"], row["layer"], row["seed"]) == \
            ("tiny", "original", "toy-harm", 1, 3)
        # <s> user : <image>x16 <prompt words> assistant :
        assert row["n_prompt_tokens"] == 3 + IMAGE_TOKENS + len(source["prompt"].split()) + 2
        assert 1 <= row["n_response_tokens"] <= 5 and isinstance(row["response"], str)
        assert row["finished"] or row["n_response_tokens"] == 5  # unfinished = hit the budget
    assert "wrote 3 responses" in (tmp_path / "out" / "sweep.log").read_text()


def test_same_inputs_same_bytes(model_dir, dataset, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sweep(model_dir, dataset, first, layer=0)
    sweep(model_dir, dataset, second, layer="0")  # a Snakemake wildcard arrives as a string
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_text().splitlines()[0])["layer"] == 0


def test_batch_size_does_not_change_responses(model_dir, dataset, tmp_path):
    sweep(model_dir, dataset, tmp_path / "b1.jsonl", batch_size=1)
    sweep(model_dir, dataset, tmp_path / "b3.jsonl", batch_size=3)
    assert read_jsonl(tmp_path / "b1.jsonl") == read_jsonl(tmp_path / "b3.jsonl")


@pytest.mark.parametrize("layer", [-1, 5, "x"])
def test_bad_layer_fails_before_writing(model_dir, dataset, tmp_path, layer):
    out = tmp_path / "never.jsonl"
    with pytest.raises(IcetError, match="out of range|not an integer"):
        sweep(model_dir, dataset, out, layer=layer)
    assert not out.exists()


def test_bad_data_set_rows_are_named(model_dir, dataset, tmp_path):
    rows = [dict(r) for r in DATASET_ROWS]
    rows[1]["image"] = "img/missing.png"
    bad = dataset.parent / "bad.jsonl"
    write_jsonl(bad, rows)
    with pytest.raises(IcetError, match=r"bad.jsonl: row 2 \(t-0001\): image img/missing.png not found"):
        sweep(model_dir, bad, tmp_path / "o.jsonl")
    rows[1] = dict(DATASET_ROWS[0])
    write_jsonl(bad, rows)
    with pytest.raises(IcetError, match="bad.jsonl: row 2: duplicate id 't-0002'"):
        sweep(model_dir, bad, tmp_path / "o.jsonl")
    with pytest.raises(IcetError, match="variant 'tuned'"):
        sweep(model_dir, dataset, tmp_path / "o.jsonl", variant="tuned")


def _job(model_dir, dataset, index, layers, **kwargs):
    from icet.sweep import run_sweep_job

    settings = dict(model_name="tiny", variant="original", testset="toy-harm", max_new_tokens=4,
                    batch_size=3, seed=3)
    settings.update(kwargs)
    return run_sweep_job(model_dir, dataset, layers, index, **settings)


def test_sweep_job_writes_one_shard_per_layer_and_an_index(model_dir, dataset, tmp_path):
    index = tmp_path / "out" / "chunk-00.json"
    assert _job(model_dir, dataset, index, [0, 2, 4]) == [0, 2, 4]
    listed = json.loads(index.read_text())["shards"]
    assert sorted(listed) == ["layer-00", "layer-02", "layer-04"]
    for layer in (0, 2, 4):
        rows = read_jsonl(tmp_path / "out" / f"layer-{layer:02d}.jsonl")
        assert {r["layer"] for r in rows} == {layer} and len(rows) == len(DATASET_ROWS)
    # A shard equals the single-layer sweep of the same settings, byte for byte.
    single = tmp_path / "single.jsonl"
    sweep(model_dir, dataset, single, layer=2, max_new_tokens=4, batch_size=3, log=None)
    assert single.read_bytes() == (tmp_path / "out" / "layer-02.jsonl").read_bytes()


def test_sweep_job_resumes_without_touching_finished_shards(model_dir, dataset, tmp_path):
    index = tmp_path / "out" / "chunk-00.json"
    _job(model_dir, dataset, index, [0, 1, 2])
    shards = {l: tmp_path / "out" / f"layer-{l:02d}.jsonl" for l in (0, 1, 2)}
    before = {l: (p.read_bytes(), p.stat().st_mtime_ns) for l, p in shards.items()}
    # An interrupted job: layer 1's shard lost its completion record, layer 2 never written.
    (tmp_path / "out" / "layer-01.meta.json").unlink()
    shards[2].unlink()
    assert _job(model_dir, dataset, index, [0, 1, 2]) == [1, 2]
    assert (shards[0].read_bytes(), shards[0].stat().st_mtime_ns) == before[0]
    assert shards[2].read_bytes() == before[2][0]
    assert _job(model_dir, dataset, index, [0, 1, 2]) == []  # nothing left to do


def test_sweep_job_recomputes_when_settings_change(model_dir, dataset, tmp_path):
    index = tmp_path / "out" / "chunk-00.json"
    _job(model_dir, dataset, index, [0, 1])
    assert _job(model_dir, dataset, index, [0, 1], max_new_tokens=5) == [0, 1]


def test_sweep_job_applies_the_models_prompting_and_recomputes_on_change(model_dir, dataset, tmp_path,
                                                                        monkeypatch):
    """The model's system_prompt / image_preprocessing reach the adapter, and changing either
    recomputes the shards (the model saw different input)."""
    import icet.models.loading

    seen = []
    real = icet.models.loading.load_adapter

    def spy(*args, **kwargs):
        adapter = real(*args, **kwargs)
        seen.append((adapter.system_prompt, adapter.image_preprocessing))
        return adapter

    monkeypatch.setattr(icet.models.loading, "load_adapter", spy)
    index = tmp_path / "out" / "chunk-00.json"
    assert _job(model_dir, dataset, index, [0, 1]) == [0, 1]
    assert _job(model_dir, dataset, index, [0, 1], prompting={"image_preprocessing": "pad"}) == [0, 1]
    prompting = {"system_prompt": "a red square", "image_preprocessing": "pad"}
    assert _job(model_dir, dataset, index, [0, 1], prompting=prompting) == [0, 1]
    assert _job(model_dir, dataset, index, [0, 1], prompting=prompting) == []
    assert seen == [(None, "processor"), (None, "pad"), ("a red square", "pad")]


def test_sweep_job_recomputes_when_code_or_libraries_change(model_dir, dataset, tmp_path,
                                                           monkeypatch):
    """A fix in the engine or a torch/transformers upgrade must not keep the old shards."""
    import shutil

    import transformers

    import icet.shards

    code = tmp_path / "code" / "icet"
    shutil.copytree(icet.shards.PACKAGE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(icet.shards, "PACKAGE_DIR", code)
    index = tmp_path / "out" / "chunk-00.json"
    assert _job(model_dir, dataset, index, [0, 1]) == [0, 1]
    (code / "report" / "tables.py").write_text("# not sweep code\n")
    assert _job(model_dir, dataset, index, [0, 1]) == []  # unrelated code: shards kept
    (code / "engine.py").write_text((code / "engine.py").read_text() + "\n# a fix\n")
    assert _job(model_dir, dataset, index, [0, 1]) == [0, 1]
    monkeypatch.setattr(transformers, "__version__", "99.0.0")
    assert _job(model_dir, dataset, index, [0, 1]) == [0, 1]
    monkeypatch.setattr(torch, "__version__", "99.0.0")
    assert _job(model_dir, dataset, index, [0, 1]) == [0, 1]
    assert _job(model_dir, dataset, index, [0, 1]) == []


def test_shard_settings_name_device_dtype_backend_and_gpu_batching(model_dir, monkeypatch):
    """CPU fp32: engine and batch size give the same tokens, so they stay out; on a GPU
    (bf16) they are in, and device, dtype and the image processor backend always are."""
    import icet.models.loading
    from icet.shards import fingerprint
    from icet.sweep import shard_settings

    def settings(**kwargs):
        base = dict(model_name="tiny", variant="original", testset="toy-harm", seed=3,
                    max_new_tokens=4, device="cpu", engine="fast", batch_size=3,
                    engine_batch_size="auto")
        return shard_settings(model_dir, **{**base, **kwargs})

    cpu = settings()
    assert (cpu["device"], cpu["dtype"]) == ("cpu", "float32")
    assert (cpu["image_processor_class"], cpu["image_processor_backend"]) == \
        ("CLIPImageProcessorPil", "pil")
    assert cpu["torch"] == torch.__version__ and len(cpu["code"]) == 64
    assert "engine" not in cpu and "batch_size" not in cpu
    assert settings(engine="naive", batch_size=1, engine_batch_size=8) == cpu

    # What a job that resolved its device to a GPU (with native bf16) fingerprints (no GPU
    # needed to build it).
    import icet.runtime

    monkeypatch.setattr(icet.models.loading, "resolve_device", lambda device: torch.device("cuda"))
    monkeypatch.setattr(icet.runtime, "check_native_bf16", lambda device: None)
    gpu = settings()
    assert (gpu["device"], gpu["dtype"], gpu["engine"], gpu["batch_size"]) == \
        ("cuda", "bfloat16", "fast", "auto")
    keys = {fingerprint(s) for s in (cpu, gpu, settings(engine_batch_size=64), settings(engine="naive"),
                                     settings(engine="naive", batch_size=8))}
    assert len(keys) == 5


def test_sweep_job_checks_every_layer_before_generating(model_dir, dataset, tmp_path):
    index = tmp_path / "out" / "chunk-00.json"
    with pytest.raises(IcetError, match="layer 9"):
        _job(model_dir, dataset, index, [0, 9])
    assert not (tmp_path / "out" / "layer-00.jsonl").exists()


def test_fast_and_naive_engines_write_the_same_shards(model_dir, dataset, tmp_path):
    fast = tmp_path / "fast" / "chunk-00.json"
    naive = tmp_path / "naive" / "chunk-00.json"
    assert _job(model_dir, dataset, fast, [0, 2, 4], engine="fast", engine_batch_size=4) == [0, 2, 4]
    assert _job(model_dir, dataset, naive, [0, 2, 4], engine="naive") == [0, 2, 4]
    for layer in (0, 2, 4):
        name = f"layer-{layer:02d}.jsonl"
        assert (fast.parent / name).read_bytes() == (naive.parent / name).read_bytes()
    # On CPU in fp32 the engine is not in the fingerprint: switching it keeps finished shards.
    assert _job(model_dir, dataset, fast, [0, 2, 4], engine="naive") == []


def test_fast_job_killed_mid_sweep_keeps_finished_layer_groups(model_dir, dataset, tmp_path, monkeypatch):
    """3 prompts and 3 rows per batch: one layer per group; a crash in the third group keeps two."""
    import icet.engine

    index = tmp_path / "out" / "chunk-00.json"
    real = icet.engine.decode
    calls = []

    def crash_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(icet.engine, "decode", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        _job(model_dir, dataset, index, [0, 1, 2], engine="fast", engine_batch_size=3)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("layer-*.jsonl")) == ["layer-00.jsonl", "layer-01.jsonl"]
    assert not index.exists()
    monkeypatch.setattr(icet.engine, "decode", real)
    assert _job(model_dir, dataset, index, [0, 1, 2], engine="fast", engine_batch_size=3) == [2]
    clean = tmp_path / "clean" / "chunk-00.json"
    _job(model_dir, dataset, clean, [0, 1, 2], engine="naive")
    for layer in (0, 1, 2):
        name = f"layer-{layer:02d}.jsonl"
        assert (out / name).read_bytes() == (clean.parent / name).read_bytes()


def test_unknown_engine_is_named(model_dir, dataset, tmp_path):
    with pytest.raises(IcetError, match="sweep engine 'turbo' is not one of fast, naive"):
        _job(model_dir, dataset, tmp_path / "out" / "chunk-00.json", [0], engine="turbo")
