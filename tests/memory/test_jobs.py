"""What the workflow does with the memory model: resources of the GPU rules, the table, and
the check a job runs before it loads anything."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from icet.errors import IcetError
from icet.memory.paper import config_of

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_gpu(monkeypatch):
    """A CUDA device with 12 GB free of 16 GB, as torch would report it."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (12 * 10**9, 16 * 10**9))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4-16GB")


def folder(tmp_path: Path, repo: str) -> Path:
    out = tmp_path / repo.replace("/", "_")
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config_of(repo)))
    return out


def test_a_job_that_cannot_fit_stops_before_loading_with_the_figures(small_gpu, tmp_path):
    from icet.memory.jobs import check_judge_fits, check_lppo_fits, check_sweep_fits
    from icet.lppo.config import schema_defaults

    llama = folder(tmp_path, "meta-llama/Llama-3.2-11B-Vision-Instruct")
    with pytest.raises(IcetError) as err:
        check_sweep_fits(llama, 128, "cuda", "llama-3.2-11b-vision sweep")
    message = str(err.value)
    assert "\n" not in message and message.startswith("llama-3.2-11b-vision sweep: ")
    assert re.search(r"2[0-9]\.\d GB at its peak", message) and "weights 21.3" in message
    assert "Tesla T4-16GB has 12.0 GB free of 16.0 GB" in message

    llava = folder(tmp_path, "llava-hf/llava-1.5-7b-hf")
    params = {**schema_defaults(), "rollout_batch": 16, "minibatch": 4}
    with pytest.raises(IcetError, match=r"^L-PPO: .* GB at its peak .*gradient_checkpointing"):
        check_lppo_fits(llava, params, None, "cuda")
    harmbench = folder(tmp_path, "cais/HarmBench-Llama-2-13b-cls")
    with pytest.raises(IcetError, match=r"^harmbench: 3\d\.\d GB at its peak"):
        check_judge_fits("harmbench", {"path": str(harmbench), "batch_size": 8,
                                       "max_generation_tokens": 512}, "cuda")
    reward = folder(tmp_path, "Ray2333/gpt2-large-harmless-reward_model")
    check_judge_fits("reward", {"path": str(reward), "batch_size": 16, "max_length": 512}, "cuda")
    check_sweep_fits(llama, 128, "cpu", "on a CPU: not checked")


def test_memory_command_prints_every_gpu_job_within_its_card():
    out = subprocess.run([sys.executable, "-m", "icet", "memory", "config.yaml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for rule, job in (("sweep_shard", "llama-3.2-11b-vision"), ("lppo_train", "llava-1.5-7b"),
                      ("score_testset", "harmbench"), ("score_utility", "utility_reward")):
        assert any(line.split()[:2] == [rule, job] and " yes " in line for line in lines), out.stdout


def test_gpu_rules_ask_for_one_node_their_floor_and_the_configured_placement(tmp_path):
    """A dry run of the paper config with a GPU type, node features and two L-PPO ranks."""
    overrides = tmp_path / "gpus.yaml"
    overrides.write_text(
        "models:\n"
        "  - {name: llava-1.5-7b, source: hub, repo: llava-hf/llava-1.5-7b-hf, revision: main,\n"
        "     architecture: llava, num_layers: 24, layers: [0], lppo: true,\n"
        "     groups: {early: [0, 0]},\n"
        "     resources: {gpu: 2, mem_mb: 64000, runtime: 120, cpus: 8, gpu_model: h100,\n"
        "                 constraint: gpu80g}}\n"
        "testsets: [mr]\nutility_sets: []\n")
    targets = ["results/paper/sweep/llava-1.5-7b/original/mr/chunk-00.json",
               "results/paper/lppo/llava-1.5-7b/adapter",
               "results/paper/scores/llava-1.5-7b/original/mr.jsonl"]
    workdir = tmp_path / "run"
    workdir.mkdir()
    out = subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-n", "--cores", "1",
                          "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
                          *targets, "--configfile", str(ROOT / "config.yaml"), str(overrides)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    resources = {}
    rule = None
    for line in out.stdout.splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            resources[rule] = dict(item.split("=", 1) for item in line.split(":", 1)[1].split(", "))
    sweep, lppo, score = resources["sweep_shard"], resources["lppo_train"], resources["score_testset"]
    for job in (sweep, lppo, score):
        assert job["nodes"] == "1" and int(job["gpu_mem_mb"]) > 10_000
    for job in (sweep, lppo):
        assert job["gpu_model"] == "h100" and job["constraint"] == "gpu80g"
    assert "gpu_model" not in score and "constraint" not in score  # none configured for scoring
    assert int(lppo["mem_mb"]) == 2 * 64000  # two ranks, each loading its own models
    assert int(lppo["gpu_mem_mb"]) > int(sweep["gpu_mem_mb"])  # L-PPO's step vs one sweep row


def test_a_model_the_memory_model_does_not_know_gets_no_floor_and_stops_nothing(tmp_path):
    """Qwen2.5-VL (optional, image sizes vary) downloaded: no plan, no floor, no error."""
    from icet.config import load_config
    from icet.memory.jobs import check_sweep_fits, run_jobs

    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    config = load_config("config.yaml")
    jobs = run_jobs(config, {"llava-1.5-7b": str(qwen)}, {})
    assert "llava-1.5-7b" not in {job.name for job in jobs}
    assert "llava-next-7b" in {job.name for job in jobs}
    check_sweep_fits(qwen, 128, "cuda", "qwen sweep")  # unknown: not checked, no error
