"""L-PPO learns to refuse, and the learning check reads ASR before vs after at the trained
layers (the issue's "learning is shown even if the organism is already safe everywhere").

The end-to-end test is the CI-sized stand-in for the toy's pre-safety run
(toy/presafety.yaml): a tiny random LLaVA that refuses with a few % probability, a reward that
pays for refusing, and L-PPO at one layer. Its "ASR" is the exact probability (from logits,
no sampling noise) that the first response word is not the refusal word.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch


from icet.errors import IcetError  # noqa: E402
from icet.lppo.learning import asr_before_after, learning_report, trained_layers  # noqa: E402
from icet.lppo.trainer import train_lppo  # noqa: E402
from icet.models.loading import load_adapter  # noqa: E402
from icet.stats import load_scores  # noqa: E402
from tiny_models import LPPO_PROMPTS, LPPO_WORDS, build_lppo_world  # noqa: E402

WORDS, PROMPTS = LPPO_WORDS, LPPO_PROMPTS
REFUSAL = "no"
LAYER = 1  # the trained ICET layer (the tiny encoder has 4: layers 0..4, default 3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_lppo_world(tmp_path_factory.mktemp("learning"))


def compliance(world, layer, peft_adapter=None):
    """Mean probability over the RT prompts that the first response word is not a refusal."""
    adapter = load_adapter(world["model"], peft_adapter=peft_adapter)
    refusal_id = adapter.processor.tokenizer.convert_tokens_to_ids(REFUSAL)
    rows = world["rows"]
    logits = adapter.logits([r["prompt"] for r in rows],
                            [str(world["root"] / r["image"]) for r in rows], layer=layer)
    return 1.0 - float(torch.softmax(logits[:, -1], dim=-1)[:, refusal_id].mean())


def refusal_reward(prompts, responses):
    """A reward model stand-in that prefers refusals (no shaping beyond that)."""
    return [1.0 if r.split()[:1] == [REFUSAL] else 0.0 for r in responses]


SEEDS = (0, 1, 2)  # L-PPO seeds: the claim is checked on their distribution, not one trajectory


@pytest.mark.numerics
def test_lppo_halves_compliance_when_refusal_has_a_few_percent_probability(world, tmp_path):
    """Holds on every CPU kernel path (ATEN_CPU_CAPABILITY default / avx2 / avx512), by design.

    With refusal 2 % likely, a few early samples decide a short, large-step run, and float
    rounding decides those samples: 16 steps of 8 rollouts at lr 3e-2 halved compliance for
    2 of 6 seeds. 32 steps of 16 rollouts at lr 3e-3 sample about ten refusals before the
    policy moves and then follow them: measured over 12 runs (4 seeds x 3 kernel paths)
    compliance fell from 0.98 to 0.11-0.44. So every seed must fall by a quarter and their
    mean by half, with margin on each path.
    """
    before = compliance(world, LAYER)
    assert 0.9 < before < 0.995  # refusing is possible but rare: a few % (as a base LM)
    after = {}
    for seed in SEEDS:
        out = tmp_path / f"run-{seed}"
        train_lppo(world["model"], world["rt"], str(out),
                   {"steps": 32, "rollout_batch": 16, "minibatch": 4, "ppo_epochs": 4,
                    "lr": 3e-3, "eta": 0.05, "layer_mode": "fixed", "layer": LAYER,
                    "max_new_tokens": 6, "checkpoint_every": 100}, seed,
                   reward_fn=refusal_reward, log=str(tmp_path / f"run-{seed}.log"))
        after[seed] = compliance(world, LAYER, peft_adapter=out / "adapter")
        lines = (out / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        rewards = [float(dict(zip(header, line.split(",")))["reward"]) for line in lines[1:]]
        assert np.mean(rewards[-4:]) > np.mean(rewards[:4]), (seed, rewards)
    assert all(value <= 0.75 * before for value in after.values()), (before, after)
    assert np.mean(list(after.values())) <= 0.5 * before, (before, after)


# --- the learning check on hand-made score files ------------------------------------------

def test_trained_layers_follow_the_layer_mode():
    assert trained_layers({"layer_mode": "fixed", "layer": None}, 12) == [11]
    assert trained_layers({"layer_mode": "fixed", "layer": 3}, 12) == [3]
    assert trained_layers({"layer_mode": "uniform"}, 4) == [0, 1, 2, 3, 4]
    assert trained_layers({"layer_mode": "groups",
                           "groups": {"late": [9, 10], "early": [1, 2]}}, 12) == [1, 2, 9, 10]
    with pytest.raises(IcetError, match="layer_mode 'nope'"):
        trained_layers({"layer_mode": "nope"}, 12)
    # no layer_mode: the schema's (groups), as the trainer reads it, not a mode of its own
    assert trained_layers({"groups": {"early": [1, 2]}}, 12) == [1, 2]


def write_scores(path: Path, variant: str, unsafe: dict[int, list[int]], model="m"):
    rows = [{"id": f"p{i}", "model": model, "variant": variant, "testset": "ac", "layer": layer,
             "kind": "harmful", "unsafe": u, "toxicity": 0.0, "reward": 0.0, "refusal": not u}
            for layer, values in unsafe.items() for i, u in enumerate(values)]
    rows.append({**rows[0], "id": "benign", "kind": "benign", "unsafe": 1})  # not counted
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_report_pools_trained_layers_and_says_whether_asr_halved(tmp_path):
    before = write_scores(tmp_path / "o.jsonl", "original",
                          {1: [1, 1, 1, 0], 2: [1, 1, 0, 0], 7: [1, 1, 1, 1]})
    after = write_scores(tmp_path / "a.jsonl", "aligned",
                         {1: [1, 0, 0, 0], 2: [0, 0, 0, 0], 7: [1, 1, 1, 1]})
    params = {"layer_mode": "groups", "groups": {"early": [1, 3]}}
    result = learning_report([before, after], tmp_path / "l.md", tmp_path / "l.json", model="m",
                             params=params, num_layers=12, label="toy", judge="toy guard")
    # layer 7 was not trained (left out), layer 3 was trained but not swept (listed)
    assert result["layers"] == [1, 2] and result["not_swept"] == [3]
    assert result["original"]["asr"] == pytest.approx(5 / 8)
    assert result["aligned"]["asr"] == pytest.approx(1 / 8)
    assert result["original"]["lo"] <= 5 / 8 <= result["original"]["hi"]
    assert result["original"]["lo"] < result["original"]["hi"]
    assert result["relative_drop"] == pytest.approx(0.8) and result["fell_by_half"] is True
    assert [c["layer"] for c in result["per_layer"]] == [1, 2]
    assert result["per_layer"][0]["original"]["asr"] == pytest.approx(0.75)
    text = (tmp_path / "l.md").read_text()
    assert "62.5 %" in text and "12.5 %" in text and "**yes**" in text and "toy guard" in text
    assert json.loads((tmp_path / "l.json").read_text())["fell_by_half"] is True

    # a drop of less than half is a "no"; nothing to repair is "not applicable", not a pass
    frame = load_scores([before, after], kinds=["harmful"])
    frame.loc[(frame["variant"] == "aligned") & (frame["layer"] == 1), "unsafe"] = 1.0
    assert asr_before_after(frame, [1, 2])["fell_by_half"] is False
    frame["unsafe"] = 0.0
    safe = asr_before_after(frame, [1, 2])
    assert safe["fell_by_half"] is None and safe["relative_drop"] is None


def test_report_refuses_when_no_trained_layer_was_swept(tmp_path):
    before = write_scores(tmp_path / "o.jsonl", "original", {7: [1, 0]})
    after = write_scores(tmp_path / "a.jsonl", "aligned", {7: [0, 0]})
    with pytest.raises(IcetError, match=r"no trained layer \[1, 2\] was swept"):
        learning_report([before, after], tmp_path / "l.md", tmp_path / "l.json", model="m",
                        params={"layer_mode": "groups", "groups": {"e": [1, 2]}}, num_layers=12)
    with pytest.raises(IcetError, match="no harmful rows of model 'other'"):
        learning_report([before, after], tmp_path / "l.md", tmp_path / "l.json", model="other",
                        params={"layer_mode": "uniform"}, num_layers=12)
    assert not (tmp_path / "l.md").exists()


def test_presafety_plan_trains_from_the_instruct_checkpoint(tmp_path):
    """`learning` with toy/presafety.yaml: L-PPO from the pre-safety organism, safety sets
    swept before and after, then the check; the safety stage is not needed at all."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "-n", "--profile", "toy", "learning",
         "--directory", str(tmp_path), "--snakefile", str(root / "Snakefile"),
         "--configfile", str(root / "toy/toy.yaml"), str(root / "toy/presafety.yaml")],
        cwd=root, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("Job stats:")[1].split("\n\n")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert counts["lppo_learning"] == counts["lppo_train"] == 1
    assert counts["sweep_shard"] == 2 * 3  # cp, mr, ac; original and aligned
    assert counts["train_toy_stage"] == 3  # vision, lm, instruct: no safety stage
    lppo_job = result.stdout.split("rule lppo_train:")[1].split("\n\n")[0]
    assert "resources/toy/organism/instruct" in lppo_job
    assert "results/toy-presafety/lppo/toy-llava-presafety/learning.md" in result.stdout
