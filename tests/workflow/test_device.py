"""Asked for a GPU, got none: one line before any model is loaded, not fp32 on
the CPU for hours. `device: cpu` stays a deliberate way to run GPU-sized jobs on a CPU (the
toy's SLURM test submits its sweep with gpu=1 to fake GPUs and runs it on the CPU)."""

import re
from pathlib import Path

import pytest
import torch

from icet.errors import IcetError
from icet.models import loading
from icet.runtime import resolve_device

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_cuda_without_cuda_is_one_line(no_cuda):
    for resolve in (resolve_device, loading.resolve_device):
        with pytest.raises(IcetError) as err:
            resolve("cuda")
        message = str(err.value)
        assert "\n" not in message and "sees no CUDA device" in message
        assert "`device: cpu`" in message
    assert resolve_device("auto") == "cpu" and str(loading.resolve_device("auto")) == "cpu"


def test_a_gpu_job_with_device_auto_needs_cuda():
    from icet.runtime import job_device

    assert job_device("auto", 1) == "cuda"
    assert job_device("auto", 0) == "auto"
    assert job_device("cpu", 1) == "cpu"  # the toy on fake GPUs: deliberate
    assert job_device("cuda", 0) == "cuda"


def test_sweep_job_stops_before_loading_a_model(no_cuda, tmp_path):
    """What rule sweep_shard runs on a GPU job placed on a node without CUDA."""
    from icet.sweep import run_sweep_job

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00"
        b"\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe"
        b"\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82")
    data = tmp_path / "cp.jsonl"
    data.write_text('{"id": "cp-1", "prompt": "p", "image": "img/a.png", "kind": "harmful", '
                    '"category": "c", "answer": null, "source": "t"}\n')
    with pytest.raises(IcetError, match=r"^device 'cuda' .* sees no CUDA device"):
        run_sweep_job(tmp_path / "no-model-here", data, [0], tmp_path / "out" / "chunk-00.json",
                      model_name="m", variant="original", testset="cp", device="cuda",
                      max_new_tokens=8, batch_size=1)
    assert not (tmp_path / "out").exists()


def test_rules_pass_the_job_device():
    """Every rule with GPU resources hands its script job_device(...) (directly, or through
    common.smk's model_device, which calls it), not config["device"]: as `device=` or, a
    placement knob that reruns nothing, as the `"device"` of its `tuning` param."""
    common = (ROOT / "rules" / "common.smk").read_text()
    model_device = re.search(r"^def model_device\(.*?(?=^\S)", common, re.M | re.S).group(0)
    assert "return job_device(" in model_device
    for name in ("sweep.smk", "lppo.smk", "score.smk"):
        text = (ROOT / "rules" / name).read_text()
        devices = re.findall(r"^\s+(?:device=|.*\"device\": )(.*)$", text, re.M)
        assert devices and all("job_device(" in d or "model_device(" in d
                               for d in devices), (name, devices)


@pytest.fixture
def v100(monkeypatch):
    """A CUDA device without native bfloat16, as torch reports a V100 (sm 7.0)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")


def test_a_gpu_without_native_bf16_is_one_line(v100):
    """The models and LLM judges run in bf16 on a GPU; a V100 or T4 only emulates it."""
    from icet.judges.base import judge_dtype

    for call in (lambda: loading.resolve_dtype(None, torch.device("cuda")),
                 lambda: loading.resolve_dtype("bf16", torch.device("cuda")),
                 lambda: judge_dtype("cuda", "bf16")):
        with pytest.raises(IcetError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and "Tesla V100-SXM2-32GB" in message and "7.0" in message
    assert judge_dtype("cuda", "fp32") is torch.float32  # the small classifiers stay fp32
    assert loading.resolve_dtype("float32", torch.device("cuda")) is torch.float32


def test_judge_dtype_is_explicit_everywhere():
    from icet.judges.base import judge_dtype

    assert judge_dtype("cpu", "bf16") is torch.float32 and judge_dtype("cpu", "fp32") is torch.float32
    with pytest.raises(ValueError):
        judge_dtype("cpu", "auto")


def test_deterministic_mode_sets_the_cublas_workspace(monkeypatch):
    """torch's deterministic mode needs CUBLAS_WORKSPACE_CONFIG for cuBLAS on CUDA."""
    import os

    from icet.seeding import seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a site's own choice is kept
    seed_everything(0)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
