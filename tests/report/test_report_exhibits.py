"""Judge agreement, LaTeX output, and the qualitative exhibits, on hand-computed toy inputs."""

import csv
import math
import re
from pathlib import Path

import pytest
from PIL import Image

from icet.errors import IcetError
from icet.io import write_jsonl
from icet.report.agreement import agreement_rows, cohen_kappa, write_agreement_table
from icet.report.examples import figure1, mask_response, write_example_table
from icet.report.exhibits import resolve_exhibit, scale_layer
from icet.report.latex import escape, latex_table
from icet.report.tables import write_layer_table
from icet.stats import load_scores

MODELS = {"toy-llava": {"architecture": "llava", "num_layers": 12, "lppo": True},
          "other": {"architecture": "llava", "num_layers": 24, "lppo": False}}


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def score_row(i, layer, unsafe, refusal, toxicity, variant="original", model="toy-llava",
              response="sure here is how you do the harmful thing step by step"):
    return {"id": f"cp-{i}", "model": model, "variant": variant, "testset": "cp",
            "layer": layer, "kind": "harmful", "unsafe": unsafe, "refusal": refusal,
            "toxicity": toxicity, "reward": 0.0, "seed": 3, "prompt": f"prompt {i} & co_",
            "image": "images/a.png", "response": response,
            "guard_verdict": {1: "unsafe", 0: "safe", None: None}[unsafe]}


# ---- judge agreement ----------------------------------------------------------------------

def test_cohen_kappa_hand_computed():
    # po = 6/8, pa = pb = 1/2 -> pe = 1/2 -> kappa = (0.75 - 0.5) / 0.5
    assert cohen_kappa([1, 1, 0, 0, 1, 0, 1, 0], [1, 0, 0, 0, 1, 1, 1, 0]) == pytest.approx(0.5)
    # po = 1/2, pa = 3/4, pb = 1/4 -> pe = 3/8 -> kappa = (1/2 - 3/8) / (5/8) = 0.2
    assert cohen_kappa([1, 1, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.2)
    assert cohen_kappa([1, 0], [0, 1]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa([0, 0, 0], [0, 0, 0]))  # one class: undefined


def test_agreement_rows_pairs_and_dropped_unparseable(tmp_path):
    # guard: 1 1 0 0 (+ one unparseable); keyword harmful = not refusal: 1 0 0 0 1;
    # toxic (>= 0.5): 1 1 1 0 0
    rows = [score_row(0, 0, 1, False, 0.9), score_row(1, 0, 1, True, 0.6),
            score_row(2, 0, 0, True, 0.5), score_row(3, 0, 0, True, 0.1),
            score_row(4, 0, None, False, 0.2)]
    path = tmp_path / "cp.jsonl"
    write_jsonl(path, rows)
    got = {(r["judge_a"], r["judge_b"]): r for r in agreement_rows(load_scores([path]))}
    gk = got[("guard", "keyword")]
    assert (gk["n"], gk["positive_a"], gk["positive_b"]) == (4, 2, 1)
    assert gk["agreement"] == pytest.approx(75.0)
    # po = 3/4, pa = 1/2, pb = 1/4 -> pe = 1/2 -> kappa = 0.5
    assert gk["kappa"] == pytest.approx(0.5)
    kt = got[("keyword", "toxicity")]
    # keyword 1 0 0 0 1 vs toxic 1 1 1 0 0: po = 2/5, pa = 2/5, pb = 3/5, pe = 12/25
    assert kt["n"] == 5 and kt["kappa"] == pytest.approx((0.4 - 0.48) / 0.52)
    out = tmp_path / "agreement"
    write_agreement_table([path], f"{out}.csv", f"{out}.md", f"{out}.tex", label="toy", seed=3)
    table = read_csv(f"{out}.csv")
    assert [(r["judge_a"], r["judge_b"]) for r in table] == [
        ("guard", "keyword"), ("guard", "toxicity"), ("keyword", "toxicity")]
    assert table[0]["kappa"] == "0.5000"
    with pytest.raises(IcetError, match="unknown judge"):
        agreement_rows(load_scores([path]), judges=["guard", "gpt4"])


# ---- LaTeX ---------------------------------------------------------------------------------

def balanced(tex: str) -> bool:
    begins = re.findall(r"\\begin\{(\w+)\}", tex)
    ends = re.findall(r"\\end\{(\w+)\}", tex)
    stack = []
    events = sorted([(m.start(), "b", m.group(1)) for m in re.finditer(r"\\begin\{(\w+)\}", tex)]
                    + [(m.start(), "e", m.group(1)) for m in re.finditer(r"\\end\{(\w+)\}", tex)])
    for _, what, name in events:
        if what == "b":
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return not stack and len(begins) == len(ends)


def test_latex_escapes_and_balances():
    assert escape("50% of a_b & c#1 $x {y} ~^\\") == (
        r"50\% of a\_b \& c\#1 \$x \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")
    tex = latex_table(["rate %", "a_b"], [["5%", "x & y"], ["$1", "#2"]],
                      "**Bold_title.** 95% CI", "t_1")
    assert balanced(tex)
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\textbf{Bold\_title.}" in tex and r"95\% CI" in tex
    rows = [l for l in tex.splitlines() if l.endswith(r"\\")]
    assert rows == [r"rate \% & a\_b \\", r"5\% & x \& y \\", r"\$1 & \#2 \\"]
    for row in rows:  # exactly one column separator: cells' & are escaped
        assert len(re.findall(r"(?<!\\)&", row)) == 1
    assert not balanced(tex.replace(r"\end{tabular}", ""))
    with pytest.raises(ValueError):
        latex_table(["a", "b"], [["1"]], "c", "t")


def test_layer_table_tex_matches_markdown(tmp_path):
    path = tmp_path / "cp.jsonl"
    write_jsonl(path, [score_row(i, l, 1 if l else 0, not l, 0.1) for i in range(3)
                       for l in (0, 1)])
    write_layer_table([path], tmp_path / "l.csv", tmp_path / "l.md", {"n_resamples": 20},
                      judge="guard_x", out_tex=tmp_path / "l.tex")
    tex = (tmp_path / "l.tex").read_text()
    assert balanced(tex) and "guard\\_x" in tex
    assert len([l for l in tex.splitlines() if l.endswith(r"\\")]) == 3  # header + 2 layers
    body = [l for l in tex.splitlines() if l.startswith("toy-llava")]
    assert [l.split(" & ")[3] for l in body] == ["0", "1"]
    assert [l.split(" & ")[6].split(" ")[0] for l in body] == ["0.00", "100.00"]


# ---- exhibits ------------------------------------------------------------------------------

def test_scale_and_resolve_exhibit():
    assert [scale_layer(l, 12) for l in (6, 9, 10, 11, 13, 15, 18, 19)] == [3, 5, 5, 6, 7, 8, 9, 10]
    assert scale_layer(18, 24) == 18 and scale_layer(20, 32) == 27
    spec = {"model": "llava-1.5-7b", "layers": [6, 12, 18], "with_default": True,
            "variants": ["original", "aligned"]}
    ex = resolve_exhibit(spec, MODELS, "toy-llava")
    assert ex["model"] == "toy-llava" and ex["requested_model"] == "llava-1.5-7b"
    assert ex["layers"] == [3, 6, 9, 11] and ex["paper_layers"] == [6, 12, 18, None]
    assert ex["variants"] == ["original", "aligned"]
    # a reduced sweep: nearest swept layer, duplicates dropped (the first paper layer kept)
    ex = resolve_exhibit(spec, MODELS, "toy-llava", {"toy-llava": [0, 2, 6, 11, 12]})
    assert ex["layers"] == [2, 6, 11] and ex["paper_layers"] == [6, 12, 18]
    # a model without L-PPO has no aligned variant to show
    ex = resolve_exhibit({**spec, "model": "other"}, MODELS, "toy-llava")
    assert ex["model"] == "other" and ex["variants"] == ["original"]
    assert ex["layers"] == [6, 12, 18, 23]


def test_mask_response():
    text = "sure here is how to build it"
    assert mask_response(text, False, 3) == "sure here is [... 4 words masked]"
    assert mask_response(text, True, 3) == text
    assert mask_response("i cannot", False, 3) == "i cannot"
    assert mask_response("  a\n b  c d ", False, 0) == "[... 4 words masked]"


@pytest.fixture
def exhibit_scores(tmp_path):
    """cp-1 is unsafe at layers 3 and 9, cp-0 only at 3: cp-1 is the exhibit's prompt."""
    rows = []
    for layer in (3, 6, 9, 11):
        for variant in ("original", "aligned"):
            for i in (0, 1):
                unsafe = int(variant == "original" and ((i == 1 and layer in (3, 9))
                                                        or (i == 0 and layer == 3)))
                rows.append(score_row(i, layer, unsafe, not unsafe, 0.1, variant,
                                      response=f"answer {i} at {layer} one two three four"))
    path = tmp_path / "cp.jsonl"
    write_jsonl(path, rows)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "images" / "a.png")
    return path


def test_example_table_picks_most_unsafe_prompt_and_masks(exhibit_scores, tmp_path):
    ex = resolve_exhibit({"model": "x", "layers": [18, 6], "variants": ["original", "aligned"]},
                         MODELS, "toy-llava")
    rows = write_example_table("table4", "Table 4", ex, [exhibit_scores], tmp_path / "t.csv",
                               tmp_path / "t.md", tmp_path / "t.tex", shown_words=2,
                               judge="toy guard", seed=3, label="toy")
    assert {r["id"] for r in rows} == {"cp-1"}
    assert [(r["variant"], r["layer"], r["guard_verdict"]) for r in rows] == [
        ("original", 9, "unsafe"), ("original", 3, "unsafe"),
        ("aligned", 9, "safe"), ("aligned", 3, "safe")]
    assert rows[0]["response"] == "answer 1 [... 6 words masked]"
    md = (tmp_path / "t.md").read_text()
    assert "ICET-9 (paper: ICET-18)" in md and "judge: toy guard" in md and "(toy)" in md
    assert "one two three" not in md
    assert balanced((tmp_path / "t.tex").read_text())
    assert r"prompt 1 \& co\_" in (tmp_path / "t.tex").read_text()
    shown = write_example_table("table4", "Table 4", ex, [exhibit_scores], tmp_path / "u.csv",
                                tmp_path / "u.md", show_responses=True)
    assert shown[0]["response"] == "answer 1 at 9 one two three four"
    with pytest.raises(IcetError, match="prompt_id"):
        write_example_table("t", "T", {**ex, "prompt_id": "cp-9"}, [exhibit_scores],
                            tmp_path / "v.csv", tmp_path / "v.md")


def test_figure1_writes_png_and_pdf(exhibit_scores, tmp_path):
    ex = resolve_exhibit({"layers": [6, 18], "with_default": True}, MODELS, "toy-llava")
    rows = figure1(ex, [exhibit_scores], tmp_path, tmp_path / "f1.png", tmp_path / "f1.pdf",
                   judge="toy guard", seed=3, label="toy")
    assert [r["layer"] for r in rows] == [3, 9, 11]
    assert (tmp_path / "f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "f1.pdf").read_bytes()[:5] == b"%PDF-"
    first = (tmp_path / "f1.png").read_bytes()
    figure1(ex, [exhibit_scores], tmp_path, tmp_path / "f1.png", tmp_path / "f1.pdf",
            judge="toy guard", seed=3, label="toy")
    assert (tmp_path / "f1.png").read_bytes() == first  # reproducible bytes
    (tmp_path / "images" / "a.png").unlink()
    with pytest.raises(IcetError, match="not found"):
        figure1(ex, [exhibit_scores], tmp_path, tmp_path / "f2.png")


def test_agreement_rows_include_a_further_asr_judge_next_to_the_guard(tmp_path):
    """HarmBench's verdicts in the scores: pairs with every other judge, after the guard's."""
    # (guard unsafe, refusal, toxicity, harmbench_unsafe); row 2's harmbench unparseable
    rows = [{**score_row(i, 0, g, r, t), "harmbench_unsafe": h} for i, (g, r, t, h) in enumerate(
        [(1, False, 0.9, 1), (1, True, 0.6, 0), (0, True, 0.5, None), (0, True, 0.1, 0),
         (None, False, 0.2, 1)])]
    path = tmp_path / "cp.jsonl"
    write_jsonl(path, rows)
    got = agreement_rows(load_scores([path]))
    assert [(r["judge_a"], r["judge_b"]) for r in got] == [
        ("guard", "harmbench"), ("guard", "keyword"), ("guard", "toxicity"),
        ("harmbench", "keyword"), ("harmbench", "toxicity"), ("keyword", "toxicity")]
    gh = got[0]  # both rated: rows 0, 1, 3 -> guard 1 1 0, harmbench 1 0 0
    assert (gh["n"], gh["positive_a"], gh["positive_b"]) == (3, 2, 1)
    assert gh["agreement"] == pytest.approx(200 / 3)
    out = tmp_path / "agreement"
    write_agreement_table([path], f"{out}.csv", f"{out}.md", judge_names={
        "harmbench": "cais/HarmBench-Llama-2-13b-cls"})
    caption = Path(f"{out}.md").read_text().split("\n")[0]
    assert "harmbench = cais/HarmBench-Llama-2-13b-cls" in caption
    assert "guard says unsafe / cais/HarmBench-Llama-2-13b-cls says yes /" in caption


def test_only_a_planted_models_figure_is_labelled_planted():
    """figures/layers-toy-llava.png (the emergent toy) was titled as the planted model."""
    from icet.report.exhibits import model_label

    assert model_label("toy", "toy-llava", ["toy-llava-planted"]) == "toy"
    assert model_label("toy", "toy-llava-planted", ["toy-llava-planted"]) == \
        "toy; planted (positive control)"
