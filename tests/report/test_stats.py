"""Bootstrap CIs, layer groups and per-layer / per-group metrics against hand-computed values."""

import math
from pathlib import Path

import numpy as np
import pytest

from icet.errors import IcetError
from icet.io import write_jsonl
from icet.stats import (bootstrap_ci, group_metrics, layer_groups, layer_metrics,
                        load_scores)

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files


FAST = {"n_resamples": 200, "seed": 0}


def score_row(pid, layer, unsafe, toxicity=0.0, reward=0.0, refusal=False, variant="original",
              testset="cp", model="toy"):
    return {"id": pid, "model": model, "variant": variant, "testset": testset, "layer": layer,
            "kind": "harmful", "unsafe": unsafe, "toxicity": toxicity, "reward": reward,
            "refusal": refusal, "seed": 0}


def test_bootstrap_constant_data_ci_is_the_value():
    assert bootstrap_ci([0.1] * 7) == (0.1, 0.1, 0.1)
    assert bootstrap_ci([1, 1, None, 1]) == (1.0, 1.0, 1.0)


def test_bootstrap_empty_and_all_null_give_nan():
    for values in ([], [None, None], [float("nan")]):
        assert all(math.isnan(x) for x in bootstrap_ci(values))


def test_bootstrap_contains_mean_and_is_deterministic_by_seed():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, None, 0.5]
    mean, lo, hi = bootstrap_ci(values, n_resamples=500, seed=3)
    assert mean == pytest.approx(np.mean([0, 1, 1, 0, 1, 1, 1, 0, 1, 0.5]))  # null dropped
    assert lo < mean < hi
    assert bootstrap_ci(values, n_resamples=500, seed=3) == (mean, lo, hi)
    spread = np.linspace(0.0, 1.0, 13) ** 2  # continuous values: another seed moves the bounds
    assert bootstrap_ci(spread, seed=1) != bootstrap_ci(spread, seed=2)
    # a wider interval level gives a wider interval on the same draws
    _, lo99, hi99 = bootstrap_ci(values, n_resamples=500, ci=0.99, seed=3)
    assert lo99 <= lo and hi99 >= hi


def test_layer_groups_expand_inclusive_ranges():
    assert layer_groups(5, {"early": [0, 1], "middle": [2, 3], "late": [4, 5]}) == {
        "early": [0, 1], "middle": [2, 3], "late": [4, 5]}


@pytest.mark.parametrize("groups, message", [
    ({"early": [0, 2], "late": [2, 5]}, "late"),  # layer 2 in both
    ({"early": [0, 1], "late": [4, 6]}, "late"),  # 6 > N = 5
    ({"odd": [3, 1]}, "odd"),
    ({"bad": [0]}, "bad"),
])
def test_layer_groups_reject_overlap_and_range_naming_group(groups, message):
    with pytest.raises(IcetError, match=message):
        layer_groups(5, groups)


@pytest.fixture
def six_layer_scores(tmp_path):
    """Two prompts x layers 0..5; unsafe rates per layer 1, 1, .5, .5, 0, 0 (one null at 3)."""
    unsafe = {0: (1, 1), 1: (1, 1), 2: (1, 0), 3: (1, None), 4: (0, 0), 5: (0, 0)}
    rows = []
    for layer, pair in unsafe.items():
        for k, u in enumerate(pair):
            rows.append(score_row(f"cp-{k}", layer, u, toxicity=0.1 * layer,
                                  reward=float(layer + k), refusal=u == 0))
    path = tmp_path / "scores.jsonl"
    write_jsonl(path, rows)
    return path


def test_layer_metrics_exclude_and_count_null_unsafe(six_layer_scores):
    rows = {r["layer"]: r for r in layer_metrics(load_scores([six_layer_scores]), FAST)}
    assert [rows[l]["asr"] for l in range(6)] == [100.0, 100.0, 50.0, 100.0, 0.0, 0.0]
    assert rows[3]["n"] == 2 and rows[3]["n_unparseable"] == 1
    assert rows[2]["n_unparseable"] == 0
    assert rows[2]["ts"] == pytest.approx(20.0) and rows[2]["tr"] == pytest.approx(2.5)
    assert rows[4]["refusal"] == 100.0 and rows[0]["refusal"] == 0.0
    assert rows[0]["asr_lo"] == rows[0]["asr_hi"] == 100.0  # constant layer: CI = value


def test_group_means_average_layers_not_prompts(six_layer_scores):
    groups = layer_groups(5, {"early": [0, 1], "middle": [2, 3], "late": [4, 5]})
    rows = {r["group"]: r for r in group_metrics(load_scores([six_layer_scores]), groups, FAST)}
    assert rows["early"]["asr"] == 100.0
    # per-layer means 50 and 100 (null dropped) -> 75; pooling prompts would give 2/3
    assert rows["middle"]["asr"] == pytest.approx(75.0)
    assert rows["late"]["asr"] == 0.0
    assert rows["average"]["asr"] == pytest.approx((100 + 75 + 0) / 3)
    assert rows["middle"]["ts"] == pytest.approx(25.0)  # (20 + 30) / 2
    assert rows["late"]["tr"] == pytest.approx((4.5 + 5.5) / 2)
    assert rows["middle"]["n_unparseable"] == 1 and rows["middle"]["layers"] == [2, 3]
    assert rows["early"]["asr_lo"] == rows["early"]["asr_hi"] == 100.0
    assert rows["middle"]["asr_lo"] <= 75.0 <= rows["middle"]["asr_hi"]


def test_group_ci_deterministic_and_both_resampling_schemes(six_layer_scores):
    frame = load_scores([six_layer_scores])
    groups = layer_groups(5, {"all": [0, 5]})
    assert group_metrics(frame, groups, FAST) == group_metrics(frame, groups, FAST)
    unpaired = group_metrics(frame, groups, {**FAST, "paired": False})
    assert unpaired[0]["asr"] == group_metrics(frame, groups, FAST)[0]["asr"]
    assert unpaired[0]["asr_lo"] <= unpaired[0]["asr"] <= unpaired[0]["asr_hi"]


def test_group_missing_layers_use_those_scored(tmp_path):
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [score_row("a", 0, 1), score_row("a", 2, 0)])
    groups = layer_groups(3, {"low": [0, 1], "high": [2, 3]})
    rows = {r["group"]: r for r in group_metrics(load_scores([path]), groups, FAST)}
    assert rows["low"]["layers"] == [0] and rows["low"]["asr"] == 100.0
    assert rows["high"]["asr"] == 0.0 and rows["average"]["asr"] == 50.0


def test_load_scores_rejects_bad_rows_naming_file_and_row(tmp_path):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [score_row("a", 0, 1), score_row("b", 0, 2)])
    with pytest.raises(IcetError, match=r"bad.jsonl: row 2: key 'unsafe'"):
        load_scores([path])
    write_jsonl(path, [score_row("a", 0, 1), score_row("a", 0, 0)])
    with pytest.raises(IcetError, match=r"row 2: id 'a' already scored"):
        load_scores([path])
    write_jsonl(path, [score_row("a", 0, 1, variant="tuned")])
    with pytest.raises(IcetError, match="variant"):
        load_scores([path])


@pytest.fixture
def cp_like_scores(tmp_path):
    """CP's shape: 10 prompts x 10 images, two layers. Whether a row is unsafe depends on its
    prompt only (prompts 0-4 break with every image): 10 independent units, not 100."""
    rows = []
    for layer in (0, 1):
        for p in range(10):
            for i in range(10):
                row = score_row(f"cp-{p}-{i}", layer, int(p < 5 if layer == 0 else p < 3))
                rows.append({**row, "prompt": f"harmful prompt {p}"})
    path = tmp_path / "cp.jsonl"
    write_jsonl(path, rows)
    return path


def test_cp_ci_resamples_prompts_not_rows(cp_like_scores):
    """Resampling CP's 100 rows as independent gave a CI ~3x too narrow."""
    frame = load_scores([cp_like_scores])
    by_prompt = {r["layer"]: r for r in layer_metrics(frame, FAST)}
    by_row = {r["layer"]: r for r in layer_metrics(frame, {**FAST, "unit": "row"})}
    width = lambda r: r["asr_hi"] - r["asr_lo"]
    assert by_prompt[0]["asr"] == by_row[0]["asr"] == 50.0  # the point value is unchanged
    # 10 clusters of p = 0.5: sd ~ 15.8 points (vs 5 for 100 rows): 95% CI ~ +-30 points
    assert width(by_prompt[0]) > 2.0 * width(by_row[0])
    assert width(by_prompt[0]) > 40.0
    # group CIs (paired over layers) draw prompts too
    groups = layer_groups(1, {"all": [0, 1]})
    g_prompt = group_metrics(frame, groups, FAST)[0]
    g_row = group_metrics(frame, groups, {**FAST, "unit": "row"})[0]
    assert g_prompt["asr"] == g_row["asr"] == pytest.approx(40.0)
    assert g_prompt["n_clusters"] == 10 and g_row["n_prompts"] == 100
    assert width(g_prompt) > 2.0 * width(g_row)
    unpaired = group_metrics(frame, groups, {**FAST, "paired": False})[0]
    assert width(unpaired) > 2.0 * width(g_row)


def test_one_row_per_prompt_gives_the_row_bootstrap_exactly(six_layer_scores, tmp_path):
    """MR and AC (a prompt per row): the prompt unit changes no number."""
    from icet.io import read_jsonl
    rows = [{**r, "prompt": f"p {r['id']}"} for r in read_jsonl(six_layer_scores)]
    path = tmp_path / "with_prompt.jsonl"
    write_jsonl(path, rows)
    frame = load_scores([path])
    groups = layer_groups(5, {"early": [0, 1], "middle": [2, 3], "late": [4, 5]})
    for paired in (True, False):
        settings = {**FAST, "paired": paired}
        assert (group_metrics(frame, groups, settings)
                == group_metrics(frame, groups, {**settings, "unit": "row"}))
    assert layer_metrics(frame, FAST) == layer_metrics(frame, {**FAST, "unit": "row"})
    values = np.linspace(0, 1, 9) ** 2
    assert bootstrap_ci(values, clusters=[f"p{i}" for i in range(9)]) == bootstrap_ci(values)


def test_bootstrap_unit_is_checked():
    from icet.stats import bootstrap_settings
    with pytest.raises(IcetError, match="unit"):
        bootstrap_settings({"unit": "image"})


def test_bootstrap_defaults_are_the_schemas():
    """A direct call gets what a run gets: the config's filled `bootstrap` block and its seed."""
    from icet.config import load_config
    from icet.stats import bootstrap_settings

    config = load_config(REPO_ROOT / "config.yaml")
    assert bootstrap_settings({}) == bootstrap_settings({**config["bootstrap"], "seed": config["seed"]})
    assert bootstrap_settings({"paired": False})["paired"] is False
    with pytest.raises(IcetError, match="unknown key.*resamples"):
        bootstrap_settings({"resamples": 10})
