"""VQA accuracy of free-form answers and the utility / over-refusal table."""

import csv
from pathlib import Path

import pytest

from icet.io import write_jsonl
from icet.report.utility import utility_rows, write_utility_table
from icet.judges.vqa import answer_correct, normalise_answer

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files


@pytest.mark.parametrize("response, answer, expected", [
    ("the shape is red .", "red", True),
    ("The shape is RED!", "red", True),
    ("the shape is reddish .", "red", False),
    ("it is a blue circle", "blue circle", True),
    ("blue and then circle", "blue circle", False),
    ("there are two shapes", "2", True),
    ("i cannot help with that .", "red", False),
    ("anything", None, None),
])
def test_answer_correct(response, answer, expected):
    assert answer_correct(response, answer) is expected


def test_normalise_drops_articles_and_punctuation():
    assert normalise_answer("The Red, square!") == ["red", "square"]


def _rows(model, variant, layer, values, key):
    """VQA utility score rows (key "correct"), or XSTest safety score rows (key "refusal"),
    with the keys each contract in icet.rows requires."""
    extra = ({"utility_reward": None} if key == "correct" else
             {"testset": "xstest", "kind": "lookalike", "unsafe": 0, "toxicity": 0.0, "reward": 0.0})
    return [{"model": model, "variant": variant, "layer": layer, "id": f"q{i}", **extra, key: v,
             **({"utility_reward": float(i)} if key == "correct" else {})}
            for i, v in enumerate(values)]


def test_utility_rows_hand_computed(tmp_path):
    vqa, xs = tmp_path / "vqa.jsonl", tmp_path / "xs.jsonl"
    write_jsonl(vqa, _rows("m", "original", 0, [True, False, True, True], "correct")
                + _rows("m", "original", 1, [False, False, False, True], "correct"))
    write_jsonl(xs, _rows("m", "original", 0, [True, False], "refusal")
                + _rows("m", "original", 1, [False, False], "refusal"))
    rows = utility_rows([vqa], [xs], {"n_resamples": 200, "ci": 0.95, "seed": 0})
    by_layer = {r["layer"]: r for r in rows}
    assert by_layer[0]["vqa_accuracy"] == pytest.approx(75.0)
    assert by_layer[1]["vqa_accuracy"] == pytest.approx(25.0)
    assert by_layer[0]["utility_reward"] == pytest.approx(1.5)
    assert by_layer[0]["xstest_refusal"] == pytest.approx(50.0)
    assert by_layer[1]["xstest_refusal_lo"] == pytest.approx(0.0)
    out_csv, out_md = tmp_path / "u.csv", tmp_path / "u.md"
    write_utility_table([vqa], [xs], out_csv, out_md, {"n_resamples": 200, "ci": 0.95, "seed": 0},
                        label="toy")
    first = out_csv.read_bytes()
    write_utility_table([vqa], [xs], out_csv, out_md, {"n_resamples": 200, "ci": 0.95, "seed": 0},
                        label="toy")
    assert out_csv.read_bytes() == first
    table = list(csv.DictReader(open(out_csv)))
    assert [r["layer"] for r in table] == ["0", "1"]
    assert "(toy)" in out_md.read_text()


def _paired_vqa(tmp_path, n, before, after):
    """n questions at layer 2: the first `before` / `after` of them answered right."""
    path = tmp_path / f"vqa-{before}-{after}.jsonl"
    write_jsonl(path, _rows("m", "original", 2, [i < before for i in range(n)], "correct")
                + _rows("m", "aligned", 2, [i < after for i in range(n)], "correct"))
    return utility_rows([path], [], {"n_resamples": 1000, "ci": 0.95, "seed": 0})


def test_aligned_rows_carry_the_paired_vqa_change(tmp_path):
    rows = {r["variant"]: r for r in _paired_vqa(tmp_path, 200, 180, 174)}
    assert rows["aligned"]["vqa_change"] == pytest.approx(-3.0)
    # paired: only the 6 questions that changed vary, so the CI is far narrower than the
    # two accuracies' own CIs (about +-4 points each at n 200)
    lo, hi = rows["aligned"]["vqa_change_lo"], rows["aligned"]["vqa_change_hi"]
    assert -6.5 <= lo < -3.0 < hi < 0.0
    assert rows["original"]["vqa_change"] != rows["original"]["vqa_change"]  # NaN: no pair


@pytest.mark.parametrize("before, after, n, passed", [
    (180, 174, 200, True),   # a 3-point drop
    (180, 168, 200, True),   # 6 points, its paired CI reaching below 5: within noise
    (180, 156, 200, False),  # 12 points: the whole CI above 5
    # 10 points on 60 questions: within that set's noise, the check cannot fail it; so
    # the toy evaluates 200 questions (toy/toy.yaml sizes.vqa)
    (54, 48, 60, True),
])
def test_vqa_drop_check_judges_the_paired_drop(tmp_path, before, after, n, passed):
    from icet.io import write_csv
    from icet.report.utility import UTILITY_COLUMNS, vqa_drop_check
    from icet.report.tables import fmt

    rows = _paired_vqa(tmp_path, n, before, after)
    out = tmp_path / "utility.csv"
    write_csv(out, [{c: (fmt(r[c], 4) if isinstance(r.get(c), float) else r.get(c))
                     for c in UTILITY_COLUMNS} for r in rows], UTILITY_COLUMNS)
    what, ok, numbers = vqa_drop_check(list(csv.DictReader(open(out))), "m", 2, 5.0)
    assert ok is passed, numbers
    drop = 100.0 * (before - after) / n
    assert f"drop +{drop:.1f} [" in numbers and f"(n {n})" in numbers


# --- the standard VQA-v2 accuracy ---------------------------------------------

from icet.errors import IcetError  # noqa: E402
from icet.judges.vqa import accuracy_of, vqa_accuracy, vqa_normalise, vqa_punctuation  # noqa: E402


@pytest.mark.parametrize("response, answers, expected", [
    # min(#humans / 3, 1) averaged over the 10 leave-one-out subsets, by hand:
    ("yes", ["yes"] * 10, 1.0),  # 9 others agree in every subset
    ("yes", ["yes"] * 3 + ["no"] * 7, (3 * 2 / 3 + 7 * 1.0) / 10),  # 0.9, not 1.0
    ("2", ["2"] * 2 + ["3"] * 8, (2 * 1 / 3 + 8 * 2 / 3) / 10),  # 0.6
    ("2", ["2"] + ["3"] * 9, (1 * 0 + 9 * 1 / 3) / 10),  # 0.3
    ("4", ["3"] * 10, 0.0),
    # normalisation: number words, articles, final period, case
    ("Two.", ["2"] * 10, 1.0),
    ("A dog", ["dog"] * 10, 1.0),
    ("The red one", ["red 1"] * 10, 1.0),
    # exact match, not containment: a sentence is not the answer
    ("The shape is red.", ["red"] * 10, 0.0),
])
def test_vqa_accuracy_hand_computed(response, answers, expected):
    assert vqa_accuracy(response, answers) == pytest.approx(expected)


def test_vqa_normalisation_follows_the_official_evaluation():
    assert vqa_normalise("Two dogs.") == "2 dogs"
    assert vqa_normalise("none") == "0"
    assert vqa_normalise("dont") == "don't" and vqa_normalise("couldnt've") == "couldn't've"
    assert vqa_normalise("an apple\tand\nthe pear") == "apple and pear"
    assert vqa_normalise("3.5") == "3.5"  # a period before a digit stays
    # a mark touching a space is deleted, one inside a word becomes a space
    assert vqa_punctuation("yes, it is") == "yes it is"
    assert vqa_punctuation("black/white") == "black white"
    assert vqa_punctuation("1,000 or 2/3") == "1000 or 23"  # digit,digit: every mark deleted
    assert vqa_punctuation("it's 5:30") == "it's 5:30"  # apostrophe and colon kept


def test_human_answers_get_punctuation_only_when_they_differ():
    # all ten the same: compared as given ("black/white" != normalised "black white")
    assert vqa_accuracy("black/white", ["black/white"] * 10) == 0.0
    # ten that differ: punctuation-normalised too, so the same response now matches
    assert vqa_accuracy("black/white", ["black/white"] * 9 + ["gray"]) == pytest.approx(1.0)


@pytest.mark.parametrize("response, answers, expected", [
    # ten humans agree: 2017 normalises the response anyway (2021's a013f00 compares it as
    # given, so each of these scores 0 there)
    ("Yes", ["yes"] * 10, 1.0),
    ("Two.", ["2"] * 10, 1.0),
    ("A dog", ["dog"] * 10, 1.0),
    # humans differ: 2017 gives their answers punctuation only, so number words stay words
    # (2021 also maps them to digits: "2" would match the nine "two", 1.0 there)
    ("2", ["two"] * 9 + ["3"], 0.0),
    ("two", ["two"] * 9 + ["3"], 0.0),  # the response's word became "2"; the humans' did not
])
def test_vqa_accuracy_is_the_2017_official_code(response, answers, expected):
    """GT-Vision-Lab/VQA vqaEval.py as of 2017 (c4e6a0e4; master a4f1afd), not master since
    a013f00 (2021): docs/measures.md, "Which version of the official code"."""
    assert vqa_accuracy(response, answers) == pytest.approx(expected)


def test_today_containment_is_not_the_vqa_accuracy():
    """A response counted when it contained the majority answer."""
    row = {"answer": "yes", "answers": ["yes"] * 4 + ["no"] * 6}
    assert answer_correct("yes, and no", row["answer"]) is True
    assert accuracy_of(row, "yes, and no", "vqa", "row") == 0.0
    assert accuracy_of(row, "yes", "vqa", "row") == pytest.approx((4 * 1.0 + 6 * 1.0) / 10)
    assert accuracy_of(row, "yes, and no", "contains", "row") is True
    with pytest.raises(IcetError, match=r"row q7: key 'answers'"):
        accuracy_of({"answer": "yes"}, "yes", "vqa", "row q7")


def test_score_utility_writes_vqa_accuracy_and_stops_before_the_model_without_answers(tmp_path):
    from icet.judges.vqa import score_utility

    shard = tmp_path / "layer-00.jsonl"
    write_jsonl(shard, [{"id": "q1", "prompt": "what?", "response": "dog", "layer": 0,
                         "answer": "dog"}])
    with pytest.raises(IcetError, match=r"row id 'q1', layer 0: key 'answers'"):
        score_utility([str(shard)], str(tmp_path / "out.jsonl"), str(tmp_path / "no-model"))


def test_vqa_prompts_carry_llavas_suffix_in_the_paper_config():
    """LLaVA's evaluation prompt for short-answer VQA, a config key."""
    from icet.config import load_config
    from icet.sweep import with_prompt_suffix

    paper = load_config(REPO_ROOT / "config.yaml")
    suffix = paper["prompt_suffix"]["vqa"]
    assert suffix == "\nAnswer the question using a single word or phrase."
    assert paper["utility"]["vqa_metric"] == "vqa"
    rows = [{"id": "q1", "prompt": "What colour is the bus?"}]
    assert with_prompt_suffix(rows, suffix)[0]["prompt"] == (
        "What colour is the bus?\nAnswer the question using a single word or phrase.")
    assert rows[0]["prompt"] == "What colour is the bus?"  # the data set row is not changed
    assert with_prompt_suffix(rows, "") == rows
    with pytest.raises(IcetError, match="prompt_suffix"):
        with_prompt_suffix(rows, None)


def _vqa_rows(variant, accuracy_by_layer, reward_by_layer, n=4):
    return [{"model": "m", "variant": variant, "layer": layer, "id": f"q{i}",
             "correct": accuracy_by_layer[layer][i], "utility_reward": reward_by_layer[layer]}
            for layer in accuracy_by_layer for i in range(n)]


def test_table3_groups_layers_like_the_paper(tmp_path):
    """The paper's Table 3 is per layer group (early / middle / late), original vs
    aligned, utility reward and accuracy; the per-layer table stays beside it."""
    from icet.report.utility import table3_rows, write_table3

    original = _vqa_rows("original", {0: [1, 1, 0, 0], 1: [1, 1, 1, 1], 2: [0, 0, 0, 0],
                                      3: [1, 0, 0, 0]}, {0: 0.5, 1: 1.5, 2: -1.0, 3: 0.0})
    aligned = _vqa_rows("aligned", {0: [1, 1, 1, 0], 1: [1, 1, 1, 1], 2: [0.5, 0.5, 0, 0],
                                    3: [1, 1, 0, 0]}, {0: 1.0, 1: 2.0, 2: 0.0, 3: 1.0})
    path = tmp_path / "vqa.utility.jsonl"
    write_jsonl(path, original + aligned)
    groups = {"m": {"early": [0, 1], "late": [2, 3]}}
    boot = {"n_resamples": 200, "ci": 0.95, "seed": 0}
    rows = {r["layer_group"]: r for r in table3_rows([path], groups, {"m": 3}, boot)}
    # early original: layer means 50 % and 100 % -> 75 %; late: 0 % and 25 % -> 12.5 %
    assert rows["early"]["vqa_accuracy_original"] == pytest.approx(75.0)
    assert rows["late"]["vqa_accuracy_original"] == pytest.approx(12.5)
    assert rows["early"]["vqa_accuracy_aligned"] == pytest.approx((75 + 100) / 2)
    assert rows["late"]["vqa_accuracy_aligned"] == pytest.approx((25 + 50) / 2)
    assert rows["early"]["utility_reward_original"] == pytest.approx(1.0)
    assert rows["late"]["utility_reward_aligned"] == pytest.approx(0.5)
    assert rows["early"]["utility_reward_original_lo"] == rows["early"]["utility_reward_original_hi"] == 1.0
    lo, hi = rows["late"]["vqa_accuracy_original_lo"], rows["late"]["vqa_accuracy_original_hi"]
    assert lo <= 12.5 <= hi and hi > lo
    from icet.report.utility import write_utility_tables

    out = {k: tmp_path / f"t3.{k}" for k in ("csv", "md", "tex")}
    write_table3([path], groups, {"m": 3}, out["csv"], out["md"], boot, label="toy",
                 out_tex=out["tex"])
    both = {**{k: tmp_path / f"u.{k}" for k in ("csv", "md", "tex")},
            **{f"table3_{k}": tmp_path / f"both3.{k}" for k in ("csv", "md", "tex")}}
    write_utility_tables([path], [], both, boot, groups=groups, num_layers={"m": 3},
                         label="toy", metric="contains")
    assert both["table3_csv"].read_bytes() == out["csv"].read_bytes()
    assert "reference answer contained in the response" in both["md"].read_text()
    table = list(csv.DictReader(open(out["csv"])))
    assert [r["layer_group"] for r in table] == ["early", "late"]
    assert table[0]["vqa_accuracy_original"] == "75.0000" and table[0]["layers"] == "0-1"
    text = out["md"].read_text()
    assert "Table 3: utility per layer group" in text and "Resampling unit: the question" in text
    assert "| m | early | 0-1 | 75.0 [" in text
