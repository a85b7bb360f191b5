"""The GPU benchmarks run end to end at tiny size on a CPU (no timing assertions: speed goals
live in docs/performance.md), so the day a GPU is lent they only need `--size 7b`."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> tuple[str, dict]:
    """Run `python -m icet.bench ARGS` as a user would; (stdout, its last line as JSON)."""
    env = {"ICET_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "icet.bench", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, json.loads(done.stdout.strip().splitlines()[-1])


def test_gpu_sweep_tiny_runs_both_engines_and_the_roofline():
    out, summary = run_bench("gpu-sweep", "--size", "tiny", "--device", "cpu", "--prompts", "5",
                             "--max-new-tokens", "5", "--decode-short", "2",
                             "--naive-batch-sizes", "1,4")
    for field in ("tokens/s", "peak GiB", "speedup over naive/1:", "speedup over naive/4:",
                  "decode step", "HBM roofline fraction"):
        assert field in out
    assert set(summary["engines"]) == {"naive/1", "naive/4", "fast"}
    rows = 5 * len(summary["layers"])
    for engine in summary["engines"].values():
        # EOS is unreachable, so every row decodes exactly max_new_tokens tokens.
        assert engine["tokens"] == rows * 5
        assert engine["tokens_per_s"] > 0 and engine["peak_gib"] > 0
    assert all(v > 0 for v in summary["speedup"].values())
    assert summary["identical_share"] == 1.0  # fp32 on a CPU: the engines agree token for token
    decode = summary["decode"]
    # A timing, so its sign is not asserted (a busy CPU can make it <= 0 on a tiny model);
    # the roofline must follow from it and the bytes read.
    assert decode["rows"] == rows and math.isfinite(decode["step_s"])
    assert decode["weight_gb"] > 0 and decode["kv_gb"] > 0 and decode["hbm_gbs"] == 3350.0
    if decode["step_s"] > 0:
        assert decode["roofline_fraction"] == pytest.approx(
            (decode["weight_gb"] + decode["kv_gb"]) / decode["step_s"] / decode["hbm_gbs"])
    else:
        assert math.isnan(decode["roofline_fraction"])


def test_lppo_step_tiny_trains_lora_only():
    out, summary = run_bench("lppo-step", "--size", "tiny", "--device", "cpu", "--rollout-batch", "4",
                             "--minibatch", "2", "--max-new-tokens", "3", "--gradient-checkpointing")
    for field in ("step time:", "peak memory:", "trainable parameters"):
        assert field in out
    assert summary["gradient_checkpointing"] is True
    assert summary["response_tokens"] == 4 * 3
    for key in ("step_s", "rollout_s", "score_s", "update_s", "peak_gib", "trainable_params"):
        assert summary[key] > 0, key
    assert len(set(summary["layers"])) > 1  # uniform layers: one rollout mixes them


def test_lppo_step_uses_the_toy_profiles_settings():
    from icet.bench.lppo_step import TOY_LPPO

    toy = yaml.safe_load((ROOT / "toy" / "toy.yaml").read_text())["lppo"]
    for key, value in TOY_LPPO.items():
        assert toy[key] == value, key


def test_random_7b_config_has_llava_1_5_7b_shapes():
    from icet.bench.vlm7b import build_tokenizer, llava_config

    with tempfile.TemporaryDirectory() as work:
        tokenizer = build_tokenizer(32064, work)
        config = llava_config("7b", tokenizer)
    v, t = config.vision_config, config.text_config
    assert (v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.patch_size, v.image_size) == (
        24, 1024, 16, 14, 336)
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.intermediate_size, t.vocab_size) == (
        32, 4096, 32, 11008, 32064)
    assert len(tokenizer) == 32064 and config.vision_feature_layer == -2
    assert t.eos_token_id == t.vocab_size  # unreachable: responses never stop early
