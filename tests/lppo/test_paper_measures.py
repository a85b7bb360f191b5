"""The L-PPO objective and the run's stated deviations are the
paper's where the paper states them (fixed eta, rollout length, the TR judge's cleaned
text; Detoxify is a deviation, not a silent choice)."""

from pathlib import Path

import pytest

from icet.config import load_config
from icet.lppo.config import LppoParams
from icet.lppo.trainer import reward_function
from icet.report.reproduction import run_settings

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files

PAPER = REPO_ROOT / "config.yaml"
TOY = REPO_ROOT / "toy" / "toy.yaml"
JUDGES = {"guard": "meta-llama/Llama-Guard-3-8B", "reward": "Ray2333/gpt2-large-harmless-reward_model",
          "toxicity": "Detoxify original"}


def test_paper_config_uses_the_papers_fixed_eta():
    lppo = load_config(PAPER)["lppo"]
    assert lppo["kl_mode"] == "fixed"
    groups = {"early": [1, 8], "late": [17, 24]}
    assert LppoParams.from_dict({**lppo, "groups": groups}).kl_mode == "fixed"


def test_rollouts_are_as_long_as_the_evaluated_responses_or_the_report_says_why():
    paper = load_config(PAPER)
    assert paper["lppo"]["max_new_tokens"] == paper["generation"]["max_new_tokens"]
    assert "L-PPO rollout length" not in run_settings(paper, JUDGES)["settings"]
    # The toy's L-PPO was tuned on shorter rollouts to fit `make toy`'s time (toy/toy.yaml):
    # the reproduction report must name that mismatch.
    toy = load_config(PAPER, TOY)
    if toy["lppo"]["max_new_tokens"] != toy["generation"]["max_new_tokens"]:
        assert "judged on" in run_settings(toy, JUDGES)["settings"]["L-PPO rollout length"]


def test_training_reward_scores_the_text_the_tr_judge_scores():
    """The TR judge (icet.score) scores clean_response(response); so must L-PPO's reward."""
    from icet.judges.text import clean_response

    seen = []

    def judge(prompts, responses):
        seen.extend(responses)
        return [0.0] * len(responses)

    score = reward_function(judge, None, "cpu", LppoParams.from_dict({"layer_mode": "fixed"}))
    raw = ["  ASSISTANT: I cannot help\n\nwith that.</s>", "Sure:   step one"]
    score(["p", "q"], raw)
    assert seen == [clean_response(r) for r in raw] == ["I cannot help with that.", "Sure: step one"]


@pytest.mark.parametrize("files, expected", [((PAPER,), "hh-pair"), ((PAPER, TOY), "hh")])
def test_training_reward_reads_the_reward_model_as_tr_does(monkeypatch, files, expected):
    """L-PPO's reward function writes each pair the way the TR judge does
    (judges.reward.input_format): the card's text pair on the paper path, the single HH
    text the toy's reward model was trained on."""
    import icet.lppo.trainer as trainer

    seen = {}
    monkeypatch.setattr(trainer, "train_lppo", lambda *args, **kwargs: seen.update(params=args[3]))
    config = load_config(*files)
    trainer.train_lppo_job("model", "rt.jsonl", "out",
                           params={**config["lppo"], "groups": {"early": [1, 2]}},
                           reward_model_dir="reward", reward=config["judges"]["reward"])
    settings = LppoParams.from_dict(seen["params"]).reward_settings()
    assert settings["input_format"] == config["judges"]["reward"]["input_format"] == expected


def test_detoxify_is_a_deviation_not_a_silent_choice():
    paper = run_settings(load_config(PAPER), JUDGES)
    silent = repr(paper["settings"])
    assert "Detoxify" not in silent
    assert "Perspective API" in paper["deviations"]["toxicity (TS)"]
    assert set(paper["scorers"]) == {"ats", "atr"}  # TS and TR: compared by direction/order
    assert "L-PPO KL coefficient" not in paper["deviations"]  # fixed eta: the paper's
    assert "L-PPO rollout length" not in paper["settings"]
    toy = run_settings(load_config(PAPER, TOY), JUDGES)
    assert "L-PPO KL coefficient" not in toy["deviations"]  # the toy's eta is fixed too
    adaptive = load_config(PAPER, TOY)
    adaptive["lppo"].update(kl_mode="adaptive", target_kl=2.0)
    assert "adaptive" in run_settings(adaptive, JUDGES)["deviations"]["L-PPO KL coefficient"]
    assert "VQA accuracy" in toy["deviations"]
    assert "L-PPO training prompts" not in paper["deviations"]  # RedTeam-2K: harmful only
    assert "200 safe prompts" in toy["deviations"]["L-PPO training prompts"]
    ci = run_settings(load_config(PAPER, TOY, REPO_ROOT / "tests" / "data" / "toy-ci.yaml"), JUDGES)
    assert "shorter responses" in ci["settings"]["L-PPO rollout length"]


def test_measure_decisions_recorded_for_the_manifest():
    from icet.report.reproduction import measure_decisions

    paper = measure_decisions(load_config(PAPER))
    assert paper["bootstrap unit"]["value"] == "prompt"
    assert paper["VQA accuracy"]["value"] == "vqa"
    assert paper["L-PPO KL coefficient"]["value"] == "fixed"
    assert paper["aligned thresholds"]["value"]["asr_max"] == 50.0
    assert all(d["why"] for d in paper.values())
    toy = measure_decisions(load_config(PAPER, TOY))
    assert toy["VQA accuracy"]["value"] == "contains" and toy["prompt suffix"]["value"] == {"vqa": ""}
