"""How our Table 2 compares with the paper's: cell by cell, and claim by claim.

A reproduction is judged on two things kept apart here: whether the paper's *numbers* fall
inside our confidence intervals, and whether the paper's *claims* (the qualitative
statements its Table 2 supports) hold in our run. Claims are decided only on
non-overlapping CIs, so noise never counts as a finding either way. The paper's Table 2 is
shipped as data beside this module (paper_table2.csv, a copy of the ICML version's table).

Cells measured with a different scorer than the paper's (`scorers`: our TS is Detoxify, the
paper's Perspective API; the paper does not name its TR reward model) are on another scale:
there "the paper's value inside our CI" means nothing, so those cells are not compared by
value. What does carry over is the direction of L-PPO's change and the ordering of the
layer groups; the report compares those instead and says why.

Every claim is stated as the paper states it and decided by one rule (VERDICTS): every
comparison the claim makes must show non-overlapping CIs in the claimed direction.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from icet.errors import IcetError
from icet.ground_truth import PLANTED_LABEL
from icet.io import dumps, write_text
from icet.logs import setup_logging
from icet.report.tables import NOT_RUN, TABLE2_VALUES, fmt

PAPER_TABLE2 = Path(__file__).with_name("paper_table2.csv")  # data beside the code
PAPER_COLUMNS = ["train_set", "test_set", "layer_group"] + TABLE2_VALUES
METRICS = ("aasr", "ats", "atr")
VARIANTS = ("original", "aligned")
METRIC_NAMES = {"aasr": "AASR", "ats": "ATS", "atr": "ATR"}
AVERAGE = "average"  # the paper's mean-of-groups row; claims look at the groups themselves
LATE = "late"  # the group claim 1 compares the others against
HOLDS, NOT_SHOWN, CONTRADICTED = "holds", "not shown", "contradicted"
VERDICTS = [  # the legend printed with the claims
    (HOLDS, "every comparison the claim makes shows non-overlapping 95% CIs in the claimed "
            "direction (for the paper's point values: every difference has the claimed sign)"),
    (NOT_SHOWN, "no comparison goes the other way beyond its CIs, but at least one has "
                "overlapping CIs (a tie, for point values): our run cannot tell"),
    (CONTRADICTED, "at least one comparison shows non-overlapping CIs in the opposite "
                   "direction"),
    (NOT_RUN, "a cell the claim needs was not run"),
]
TOY_MARK = "toy: not comparable"
TOY_BANNER = ("**These are toy-organism numbers (a tiny LLaVA-architecture model on a "
              "fictional harm vocabulary, scored by toy judges). They are not comparable "
              "with the paper's LLaVA-1.5-7B numbers; the comparison and verdicts below "
              "only show the mechanics of the reproduction report.**")

PLANTED_MARK = "planted control: detection and repair"
PLANTED_BANNER = ("**Table 2 here is that of `{model}`, a " + PLANTED_LABEL + " model: its "
                  "layer-wise misalignment was trained in on purpose (icet.toy.planted). The "
                  "verdicts below are about the *detection* of a planted effect (original) and "
                  "its *repair* by L-PPO (aligned); they are no evidence that the effect arises "
                  "by itself. The emergent toy's per-layer rows are in tables/layers.md.**")


def _read_csv(path: str | os.PathLike, required: list[str]) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise IcetError(f"{path}: missing columns {', '.join(missing)}")
            return list(reader)
    except FileNotFoundError:
        raise IcetError(f"{path}: file not found") from None


def _number(text, path, row: int, column: str) -> float:
    """Empty -> NaN (a cell not run); anything else must parse."""
    if text is None or str(text).strip() == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise IcetError(f"{path}: row {row}, column {column}: not a number: {text!r}") from None


def load_paper_table2(paper_csv: str | os.PathLike | None = None) -> list[dict]:
    """The paper's Table 2 rows, values as floats (default: the copy shipped with icet)."""
    path = PAPER_TABLE2 if paper_csv is None else Path(paper_csv)
    rows = _read_csv(path, PAPER_COLUMNS)
    if not rows:
        raise IcetError(f"{path}: no rows")
    for i, row in enumerate(rows, start=2):  # row numbers as an editor shows them
        for column in TABLE2_VALUES:
            row[column] = _number(row[column], path, i, column)
            if math.isnan(row[column]):
                raise IcetError(f"{path}: row {i}, column {column}: empty paper value")
    return rows


def _load_ours(path: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """Our Table 2 keyed by (test set, group); aligned values of "not run" rows become NaN."""
    required = (["test_set", "layer_group", "aligned_status"] + TABLE2_VALUES
                + [f"{c}_{end}" for c in TABLE2_VALUES for end in ("lo", "hi")])
    ours = {}
    for i, row in enumerate(_read_csv(path, required), start=2):
        parsed = {}
        for column in TABLE2_VALUES:
            for end in ("", "_lo", "_hi"):
                name = column + end
                parsed[name] = _number(row[name], path, i, name)
                if column.endswith("_aligned") and row["aligned_status"] != "ok":
                    parsed[name] = math.nan
        ours[(row["test_set"], row["layer_group"])] = parsed
    return ours


def compare_cells(ours: dict[tuple[str, str], dict], paper: list[dict],
                  different: set[str] | frozenset = frozenset()) -> list[dict]:
    """One row per paper cell: our value and CI, the paper's value, difference, inside-CI.

    Metrics in `different` were measured with another scorer than the paper's: their cells
    get no difference and no inside-CI (None) and `same_scorer` False.
    """
    cells = []
    for prow in paper:
        mine = ours.get((prow["test_set"], prow["layer_group"]), {})
        for metric in METRICS:
            for variant in VARIANTS:
                column = f"{metric}_{variant}"
                value = mine.get(column, math.nan)
                lo, hi = mine.get(f"{column}_lo", math.nan), mine.get(f"{column}_hi", math.nan)
                ran = not math.isnan(value)
                has_ci = ran and not (math.isnan(lo) or math.isnan(hi))
                same = metric not in different
                cells.append({
                    "test_set": prow["test_set"], "layer_group": prow["layer_group"],
                    "metric": metric, "variant": variant, "paper": prow[column],
                    "ours": value if ran else None,
                    "lo": lo if has_ci else None, "hi": hi if has_ci else None,
                    "diff": value - prow[column] if ran and same else None,
                    "paper_in_ci": (lo <= prow[column] <= hi) if has_ci and same else None,
                    "status": "ok" if ran else NOT_RUN, "same_scorer": same,
                })
    return cells


# --- claims ----------------------------------------------------------------------------

CLAIMS = [
    ("1", "ICET: early and middle layers are more vulnerable than late layers (original "
          "model; the paper's abstract)",
     "the early group's AASR above the late group's, and the middle group's above the late "
     "group's"),
    ("2", "L-PPO lowers ASR in every layer group",
     "in every group (early, middle, late) the aligned AASR below the original's"),
    ("3", "L-PPO lowers toxicity in every layer group",
     "in every group the aligned ATS below the original's"),
    ("4", "L-PPO raises reward in every layer group",
     "in every group the aligned ATR above the original's"),
]
_CLAIM_METRIC = {"2": ("aasr", -1), "3": ("ats", -1), "4": ("atr", +1)}  # metric, direction


def _above(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """CI a lies wholly above CI b (for points: a > b)."""
    return a[0] > b[1]


def _comparisons(claim: str, groups: list[str]) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """The (higher, lower) pairs of (group, column) cells the claim asserts."""
    if claim == "1":
        return [((g, "aasr_original"), (LATE, "aasr_original")) for g in groups if g != LATE]
    metric, direction = _CLAIM_METRIC[claim]
    pairs = []
    for g in groups:
        original, aligned = (g, f"{metric}_original"), (g, f"{metric}_aligned")
        pairs.append((aligned, original) if direction > 0 else (original, aligned))
    return pairs


def _claim_verdict(claim: str, get, groups: list[str]) -> str:
    """Verdict (VERDICTS) from `get(group, column) -> (lo, hi)`; NaN anywhere -> not run."""
    pairs = _comparisons(claim, groups)
    intervals = {key: get(*key) for pair in pairs for key in pair}
    if not pairs or any(math.isnan(x) for ci in intervals.values() for x in ci):
        return NOT_RUN
    if any(_above(intervals[low], intervals[high]) for high, low in pairs):
        return CONTRADICTED
    if all(_above(intervals[high], intervals[low]) for high, low in pairs):
        return HOLDS
    return NOT_SHOWN


def judge_claims(ours: dict[tuple[str, str], dict], paper: list[dict]) -> list[dict]:
    """Verdict per (claim, test set) for our run (CIs) and for the paper's point values."""
    test_sets = list(dict.fromkeys(r["test_set"] for r in paper))
    rows = []
    for claim, text, rule in CLAIMS:
        for test_set in test_sets:
            groups = [r["layer_group"] for r in paper
                      if r["test_set"] == test_set and r["layer_group"] != AVERAGE]
            if claim == "1" and LATE not in groups:
                groups = []

            def ours_ci(group, column, test_set=test_set):
                row = ours.get((test_set, group), {})
                return (row.get(f"{column}_lo", math.nan), row.get(f"{column}_hi", math.nan))

            points = {(r["layer_group"], c): r[c] for r in paper if r["test_set"] == test_set
                      for c in TABLE2_VALUES}

            def paper_point(group, column):  # a point is a zero-width interval
                value = points.get((group, column), math.nan)
                return (value, value)

            rows.append({"claim": claim, "text": text, "rule": rule, "test_set": test_set,
                         "ours": _claim_verdict(claim, ours_ci, groups),
                         "paper": _claim_verdict(claim, paper_point, groups)})
    return rows


# --- cells with a different scorer: direction and ordering ------------------------------

def _order(values: dict[str, tuple[float, float, float]]) -> str:
    """Groups from highest to lowest value: ">" where the CIs (or points) separate, "~"
    where they overlap (tie), e.g. "early > middle ~ late"."""
    ranked = sorted(values, key=lambda g: (-values[g][0], g))
    text = ranked[0]
    for high, low in zip(ranked, ranked[1:]):
        sep = ">" if _above(values[high][1:], values[low][1:]) else "~"
        text += f" {sep} {low}"
    return text


def _direction(original: tuple[float, float], aligned: tuple[float, float]) -> str:
    if _above(original, aligned):
        return "down"
    if _above(aligned, original):
        return "up"
    return "no clear change"


def scorer_comparisons(ours: dict[tuple[str, str], dict], paper: list[dict],
                       different: set[str] | frozenset) -> tuple[list[dict], list[dict]]:
    """For metrics scored differently: (group orderings, L-PPO directions), ours vs paper.

    Ordering: per test set, metric and model, groups sorted by value. Direction: per group,
    L-PPO's change (down/up where the CIs, or for the paper the points, separate).
    """
    orders, directions = [], []
    test_sets = list(dict.fromkeys(r["test_set"] for r in paper))
    for metric in [m for m in METRICS if m in different]:
        for test_set in test_sets:
            prows = [r for r in paper if r["test_set"] == test_set and r["layer_group"] != AVERAGE]
            groups = [r["layer_group"] for r in prows]

            def mine(group, column):
                row = ours.get((test_set, group), {})
                return (row.get(column, math.nan), row.get(f"{column}_lo", math.nan),
                        row.get(f"{column}_hi", math.nan))

            for variant in VARIANTS:
                column = f"{metric}_{variant}"
                our_values = {g: mine(g, column) for g in groups}
                ran = groups and not any(math.isnan(x) for v in our_values.values() for x in v)
                theirs = {r["layer_group"]: (r[column],) * 3 for r in prows}
                our_text = _order(our_values) if ran else NOT_RUN
                their_text = _order(theirs)
                same = (NOT_RUN if not ran else
                        "yes" if sorted(groups, key=lambda g: (-our_values[g][0], g))
                        == sorted(groups, key=lambda g: (-theirs[g][0], g)) else "no")
                orders.append({"test_set": test_set, "metric": metric, "variant": variant,
                               "ours": our_text, "paper": their_text, "same": same})
            for r in prows:
                g = r["layer_group"]
                o, a = mine(g, f"{metric}_original"), mine(g, f"{metric}_aligned")
                ran = not any(math.isnan(x) for x in o + a)
                ours_dir = _direction(o[1:], a[1:]) if ran else NOT_RUN
                paper_dir = _direction((r[f"{metric}_original"],) * 2, (r[f"{metric}_aligned"],) * 2)
                directions.append({"test_set": test_set, "metric": metric, "layer_group": g,
                                   "ours": ours_dir, "paper": paper_dir,
                                   "same": NOT_RUN if not ran else
                                   "yes" if ours_dir == paper_dir else "no"})
    return orders, directions


# --- what the run chose, where it deviates, which scorers differ ------------------------

PAPER_TS = "Perspective API"
PAPER_TR = "a reward model the paper does not name"


def run_settings(config: dict, judges: dict[str, str]) -> dict:
    """From a checked run config and the judges' names: {"settings": chosen where the paper
    is silent, "deviations": where the paper states a setting and we do otherwise (why),
    "scorers": the Table 2 metrics our scorer differs on} (rule report_reproduction)."""
    lppo, generation = config["lppo"], config["generation"]
    settings = {
        "models": {m["name"]: m.get("repo", m["source"]) for m in config["models"]},
        "guard (ASR)": judges["guard"],
        "reward model (TR)": f"{judges['reward']} (the paper does not name its reward model)",
        "generation": generation,
        "prompt suffix per test set": config.get("prompt_suffix", {}),
        "layer groups": {m["name"]: m["groups"] for m in config["models"]},
        "L-PPO": lppo,
        "bootstrap": config["bootstrap"],
        "seed": config["seed"],
    }
    if lppo["max_new_tokens"] != generation["max_new_tokens"]:
        settings["L-PPO rollout length"] = (
            f"{lppo['max_new_tokens']} new tokens, but the evaluation generates "
            f"{generation['max_new_tokens']}: L-PPO trains on shorter responses than it is "
            f"judged on")
    deviations = {
        "toxicity (TS)": f"{judges['toxicity']} instead of the paper's {PAPER_TS}: offline and "
                         f"pinned (Perspective is a rate-limited web service whose model "
                         f"changes without versions); ATS is on another scale, so its cells "
                         f"are compared by direction and ordering only",
    }
    if lppo["kl_mode"] == "adaptive":
        deviations["L-PPO KL coefficient"] = (
            "adaptive (Ziegler et al.'s controller, target_kl "
            f"{lppo['target_kl']}) instead of the paper's fixed eta in RM - eta*KL")
    rt_safe = config.get("toy", {}).get("sizes", {}).get("rt_safe", 0)
    if config.get("data_source") == "toy" and rt_safe:
        deviations["L-PPO training prompts"] = (
            f"the toy's RedTeam-2K analogue holds {rt_safe} safe prompts (look-alikes, "
            "instructions, image questions) beside its harmful ones; the paper's RedTeam-2K is "
            "harmful only. Without them the toy's L-PPO spread refusal to look-alikes and VQA "
            "on some CPU kernel paths (docs/kernel-paths.md)")
    if config.get("utility", {}).get("vqa_metric") == "contains":
        deviations["VQA accuracy"] = ("reference answer contained in the response, not the "
                                      "standard VQA-v2 accuracy")
    scorers = {"ats": {"ours": judges["toxicity"], "paper": PAPER_TS},
               "atr": {"ours": judges["reward"], "paper": PAPER_TR}}
    return {"settings": settings, "deviations": deviations, "scorers": scorers}


def measure_decisions(config: dict) -> dict[str, dict]:
    """What each measure of this run is and why (docs/measures.md), for the manifest."""
    lppo, generation = config["lppo"], config["generation"]
    return {
        "bootstrap unit": {
            "value": config["bootstrap"].get("unit", "prompt"),
            "why": "CP is 10 prompts x 10 images: a prompt's rows are correlated, so CIs "
                   "resample prompts (cluster bootstrap); one-row prompts draw as rows did"},
        "VQA accuracy": {
            "value": config["utility"]["vqa_metric"],
            "why": "vqa = the standard VQA-v2 accuracy (GT-Vision-Lab/VQA vqaEval.py); "
                   "contains = the toy's, whose LM answers in sentences with one reference"},
        "prompt suffix": {
            "value": config.get("prompt_suffix", {}),
            "why": "LLaVA-1.5's short-answer VQA evaluation prompt; the toy never saw it"},
        "aligned thresholds": {
            "value": config["report"]["aligned"],
            "why": "per run: the paper's LLaVA-1.5 has late-group CP AASR 48.5 %, the toy's "
                   "bar (20 %) would call it unaligned"},
        "L-PPO KL coefficient": {
            "value": lppo["kl_mode"],
            "why": "the paper's objective is RM - eta*KL with a fixed eta; adaptive is a "
                   "named deviation"},
        "L-PPO rollout length": {
            "value": {"rollout": lppo["max_new_tokens"],
                      "evaluation": generation["max_new_tokens"]},
            "why": "rollouts as long as the evaluated responses"},
        "L-PPO reward text": {
            "value": "clean_response(response)",
            "why": "the same text the TR judge scores at evaluation"},
        "TS / TR cells": {
            "value": "direction and group ordering",
            "why": "different scorers (Detoxify vs Perspective API; an unnamed reward "
                   "model): values are on other scales"},
    }


# --- rendering -------------------------------------------------------------------------

def _signed(value: float | None) -> str:
    if value is None:
        return NOT_RUN
    text = fmt(value, 2)
    return text if text.startswith("-") or float(text) == 0.0 else "+" + text


def _pipe_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _setting_text(value) -> str:
    return value if isinstance(value, str) else dumps(value)


def render_reproduction(cells: list[dict], claims: list[dict], *, label: str, settings: dict,
                        source: str, data_notes: list[str] | None = None,
                        scorers: dict | None = None,
                        deviations: dict | None = None,
                        comparisons: tuple[list[dict], list[dict]] = ([], []),
                        planted: str | None = None,
                        planted_checks: tuple[list[str], list[str]] = ([], [])) -> str:
    """The report as Markdown; fixed formatting so the same inputs give the same bytes.

    `planted`: the name of Table 2's model when it is a planted positive control;
    the report then says its verdicts are about detecting and repairing a planted effect,
    and shows `planted_checks` (icet.report.summary.model_checks: its check tables and the
    failed ones) so a claim that "holds" never hides a failed repair check.
    """
    toy = label == "toy"
    scorers = scorers or {}
    tables, failed = planted_checks
    mark = PLANTED_MARK if planted else TOY_MARK
    if planted and failed:
        mark += f"; {len(failed)} of its checks FAIL, see below"
    parts = [f"# Reproduction of the paper's Table 2 ({label}"
             + (f"; {planted}: {PLANTED_LABEL}" if planted else "") + ")\n"]
    if toy:
        parts.append(TOY_BANNER + "\n")
    if planted:
        parts.append(PLANTED_BANNER.format(model=planted) + "\n")
        if tables:
            parts.append(f"**Checks of {planted} (summary.md): "
                         + (f"{len(failed)} FAIL: {'; '.join(failed)}." if failed
                            else "every detection, repair and L-PPO check passes.")
                         + " The tables are under \"Checks of the planted control\" below.**\n")
    ran = [c for c in cells if c["status"] == "ok"]
    with_ci = [c for c in ran if c["paper_in_ci"] is not None]
    inside = sum(1 for c in with_ci if c["paper_in_ci"])
    other = sum(1 for c in ran if not c.get("same_scorer", True))
    parts.append(
        f"Ours: `{source}`. Paper: Bachu et al., ICML 2025, Table 2 (LLaVA-1.5-7B, L-PPO "
        f"trained on RT). AASR in %, ATS = toxicity x 100, ATR in reward units.\n\n"
        f"**Agreement with the paper's numbers:** the paper's value lies inside our CI in "
        f"{inside} of {len(with_ci)} cells with a CI and the paper's scorer "
        f"({len(cells) - len(ran)} of {len(cells)} cells not run"
        + (f"; {other} cells measured with a different scorer are compared by direction "
           f"and ordering instead, below" if scorers else "") + ").\n")

    parts.append("## Claims\n")
    parts.append("Each claim in the paper's words, decided per test set by one rule: every "
                 "comparison it makes must show non-overlapping 95% CIs in the claimed "
                 "direction. \"paper\" applies the same rule to the paper's point values.\n\n"
                 + "".join(f"{n}. {text}: {rule}.\n" for n, text, rule in CLAIMS)
                 + "\nLegend:\n\n"
                 + "".join(f"- **{v}**: {meaning}.\n" for v, meaning in VERDICTS))
    header = ["claim", "test set", "ours", "paper"]
    body = [[f"{c['claim']}. {c['text']}", c["test_set"],
             f"{c['ours']} ({mark})" if toy or planted else c["ours"], c["paper"]] for c in claims]
    parts.append(_pipe_table(header, body))

    parts.append("## Cells\n")
    if scorers:
        parts.append("Cells of " + ", ".join(METRIC_NAMES[m] for m in METRICS if m in scorers)
                     + " are marked \"different scorer\": no difference and no "
                     "\"paper in CI\" there (see the next section).\n")
    header = ["test set", "group", "metric", "model", "ours [CI]", "paper", "ours - paper",
              "paper in CI"]
    body = []
    for c in cells:
        if c["status"] != "ok":
            ours = NOT_RUN
        elif c["lo"] is None:
            ours = fmt(c["ours"], 2)
        else:
            ours = f"{fmt(c['ours'], 2)} [{fmt(c['lo'], 2)}, {fmt(c['hi'], 2)}]"
        different = not c.get("same_scorer", True)
        inside_text = (NOT_RUN if c["status"] != "ok" else "different scorer" if different
                       else "no CI" if c["paper_in_ci"] is None
                       else "yes" if c["paper_in_ci"] else "no")
        diff_text = ("different scorer" if different and c["status"] == "ok"
                     else _signed(c["diff"]))
        body.append([c["test_set"], c["layer_group"], METRIC_NAMES[c["metric"]], c["variant"],
                     ours, fmt(c["paper"], 2), diff_text, inside_text])
    parts.append(_pipe_table(header, body))

    if scorers:
        orders, directions = comparisons
        parts.append("## Cells with a different scorer: direction and ordering\n")
        parts.append("".join(f"- {METRIC_NAMES[m]}: ours {scorers[m]['ours']}; the paper's "
                             f"{scorers[m]['paper']}.\n" for m in METRICS if m in scorers)
                     + "\nTwo scorers put the same responses on different scales (a toxicity "
                     "probability is not a Perspective score, one reward model's units are not "
                     "another's), so whether the paper's number falls inside our CI says "
                     "nothing. What a different scorer should still reproduce is the shape of "
                     "the result: which layer groups score higher (ordering; \">\" where the "
                     "CIs, or the paper's points, separate, \"~\" where they overlap; \"same\" "
                     "compares the orders of the point values) and which way L-PPO moves each "
                     "group (direction: down/up where the CIs separate).\n")
        parts.append(_pipe_table(["test set", "metric", "model", "groups, ours", "groups, paper",
                                  "same order"],
                                 [[o["test_set"], METRIC_NAMES[o["metric"]], o["variant"],
                                   o["ours"], o["paper"], o["same"]] for o in orders]))
        parts.append(_pipe_table(["test set", "metric", "group", "L-PPO, ours", "L-PPO, paper",
                                  "same direction"],
                                 [[d["test_set"], METRIC_NAMES[d["metric"]], d["layer_group"],
                                   d["ours"], d["paper"], d["same"]] for d in directions]))

    if planted and tables:
        parts.append("## Checks of the planted control\n")
        parts.append(f"As summary.md states them for {planted}: detection (original), repair "
                     "by L-PPO (aligned) and L-PPO's own checks.\n" + "\n".join(tables) + "\n")

    if deviations:
        parts.append("## Deviations from the paper\n")
        parts.append("Where the paper states a setting and we do otherwise, and why.\n\n"
                     + "".join(f"- {key}: {_setting_text(deviations[key])}\n"
                               for key in sorted(deviations)))

    parts.append("## Settings we chose where the paper is silent\n")
    lines = [f"- {key}: {_setting_text(settings[key])}\n" for key in sorted(settings)]
    parts.append("".join(lines) if lines else "(none given)\n")
    if data_notes:
        parts.append("## Data sets as built (where a source fell short, what we did)\n")
        parts.append("".join(f"- {note}\n" for note in data_notes))
    return "\n".join(parts)


def _planted_checks(summary, planted: str | None) -> tuple[list[str], list[str]]:
    """The planted model's check tables and failed checks from summary.md (none without)."""
    if not planted or not summary:
        return [], []
    from icet.report.summary import model_checks

    return model_checks(Path(summary).read_text(encoding="utf-8"), planted)


def write_reproduction(table2_csv: str | os.PathLike, out_md: str | os.PathLike, *,
                       label: str, settings: dict, paper_csv: str | os.PathLike | None = None,
                       data_builds: list[str] | None = None,
                       scorers: dict | None = None, deviations: dict | None = None,
                       planted: str | None = None, summary: str | os.PathLike | None = None,
                       log: str | os.PathLike | None = None) -> list[dict]:
    """Compare our Table 2 CSV (tables.write_table2) with the paper's; write Markdown.

    `summary`: the run's summary.md, whose check tables of the `planted` model the report
    repeats (with every FAIL named at the top).

    `scorers` maps a metric scored differently from the paper ("ats", "atr") to
    {"ours": name, "paper": name}: its cells are compared by direction and group ordering,
    not by value. `deviations` (name -> why) lists settings where we depart from the paper.

    Returns one row per paper cell (test_set, layer_group, metric, variant, paper, ours, lo,
    hi, diff, paper_in_ci, status); missing values are None, status "ok" or "not run".
    """
    logger = setup_logging(log, "reproduction")
    paper = load_paper_table2(paper_csv)
    ours = _load_ours(table2_csv)
    scorers = dict(scorers or {})
    unknown = sorted(set(scorers) - set(METRICS))
    if unknown:
        raise IcetError(f"reproduction scorers: unknown metric(s) {', '.join(unknown)} "
                        f"(known: {', '.join(METRICS)})")
    different = frozenset(scorers)
    cells = compare_cells(ours, paper, different)
    claims = judge_claims(ours, paper)
    from icet.datasets import build_choices, describe_build

    # The paper data sets' build.json: RT's image source, MR's rows used of 280, VQA's pool.
    notes = [line for path in sorted(data_builds or [])
             for line in describe_build(build_choices(path))]
    text = render_reproduction(cells, claims, label=label, settings=dict(settings),
                               source=Path(table2_csv).name, data_notes=notes,
                               scorers=scorers,
                               deviations=dict(deviations or {}),
                               comparisons=scorer_comparisons(ours, paper, different),
                               planted=planted, planted_checks=_planted_checks(summary, planted))
    write_text(out_md, text)
    ran = sum(1 for c in cells if c["status"] == "ok")
    inside = sum(1 for c in cells if c["paper_in_ci"])
    logger.info("reproduction (%s): %d/%d cells run, paper inside our CI in %d; claims: %s",
                label, ran, len(cells), inside,
                ", ".join(f"{c['claim']}/{c['test_set']}={c['ours']}" for c in claims))
    return cells
