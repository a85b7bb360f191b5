"""Utility and over-refusal per encoder layer: what alignment must not cost.

VQA: answer accuracy (icet.judges.vqa: the standard VQA-v2 accuracy, or the toy's "reference
answer contained") and the utility reward model's score. XSTest: the share of safe-but-scary
prompts refused (keyword judge), the paper's over-refusal measure.

Two tables: per layer (utility.*), and the paper's Table 3 shape (table3.*): per layer
group (early / middle / late), accuracy and utility reward, original vs aligned. A group's
value is the mean over its layers of the per-layer means, as Table 2's AASR; its CI draws
the questions once for all the group's layers (paired, as stats.group_metrics). Resampling
unit: the question (each VQA question has its own image and its own answers).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from icet.io import write_csv, write_text
from icet.logs import setup_logging
from icet.report.latex import write_latex
from icet.report.tables import NOT_RUN, fmt
from icet.rows import read_scores, read_utility_scores
from icet.stats import VARIANTS, bootstrap_ci, bootstrap_settings, difference_ci, layer_groups

ACCURACY_TEXT = {"vqa": "standard VQA-v2 accuracy (10 human answers, leave-one-out, official "
                        "normalisation; icet.judges.vqa)",
                 "contains": "reference answer contained in the response"}
TABLE3_VALUES = [f"{m}_{v}" for m in ("vqa_accuracy", "utility_reward") for v in VARIANTS]
TABLE3_COLUMNS = (["model", "layer_group", "layers"] + TABLE3_VALUES
                  + [f"{c}_{end}" for c in TABLE3_VALUES for end in ("lo", "hi")]
                  + ["n_questions"])

UTILITY_COLUMNS = ["model", "variant", "layer", "vqa_n", "vqa_accuracy", "vqa_accuracy_lo",
                   "vqa_accuracy_hi", "utility_reward", "utility_reward_lo", "utility_reward_hi",
                   "xstest_n", "xstest_refusal", "xstest_refusal_lo", "xstest_refusal_hi",
                   "vqa_change", "vqa_change_lo", "vqa_change_hi"]


def _by_cell(rows: Iterable[dict]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault((row["model"], row["variant"], row["layer"]), []).append(row)
    return cells


def utility_rows(vqa_files: Iterable, xstest_files: Iterable, bootstrap: dict | None = None) -> list[dict]:
    """One row per (model, variant, layer): VQA accuracy %, utility reward, XSTest refusal %."""
    settings = bootstrap_settings(bootstrap)
    boot = (settings["n_resamples"], settings["ci"], settings["seed"])
    vqa = _by_cell(read_utility_scores(vqa_files))
    xstest = _by_cell(row for _, _, row in read_scores(xstest_files))
    keys = sorted(set(vqa) | set(xstest), key=lambda k: (k[0], VARIANTS.index(k[1]), k[2]))
    rows = []
    for model, variant, layer in keys:
        row = {"model": model, "variant": variant, "layer": layer}
        v, x = vqa.get((model, variant, layer), []), xstest.get((model, variant, layer), [])
        row["vqa_n"], row["xstest_n"] = len(v), len(x)
        correct = [100.0 * r["correct"] for r in v if r.get("correct") is not None]
        reward = [r["utility_reward"] for r in v if r.get("utility_reward") is not None]
        refused = [100.0 * r["refusal"] for r in x if r.get("refusal") is not None]
        for name, values in (("vqa_accuracy", correct), ("utility_reward", reward),
                             ("xstest_refusal", refused)):
            mean, lo, hi = bootstrap_ci(values, *boot)
            row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
        # aligned rows: the accuracy change against the original on the same questions, with
        # a paired bootstrap CI (a drop of a few points is inside two separate CIs' noise)
        before = vqa.get((model, "original", layer), []) if variant != "original" else []
        change = difference_ci([(r["id"], 100.0 * r["correct"]) for r in v if r.get("correct") is not None],
                               [(r["id"], 100.0 * r["correct"]) for r in before
                                if r.get("correct") is not None], *boot)
        row.update(zip(("vqa_change", "vqa_change_lo", "vqa_change_hi"), change))
        rows.append(row)
    return rows


def write_utility_table(vqa_files: Iterable, xstest_files: Iterable, out_csv: str, out_md: str,
                        bootstrap: dict | None = None, *, label: str | None = None,
                        judge: str | None = None, out_tex: str | None = None,
                        metric: str = "vqa", log: str | None = None) -> list[dict]:
    """Write the utility / over-refusal table as CSV, Markdown and LaTeX; return its rows."""
    logger = setup_logging(log, "utility")
    settings = bootstrap_settings(bootstrap)
    rows = utility_rows(vqa_files, xstest_files, settings)
    write_csv(out_csv, [{c: (fmt(r[c], 4) if isinstance(r.get(c), float) else r.get(c))
                         for c in UTILITY_COLUMNS} for r in rows], UTILITY_COLUMNS)

    def cell(row, key, decimals=1):
        return (f"{fmt(row[key], decimals)} [{fmt(row[key + '_lo'], decimals)}, "
                f"{fmt(row[key + '_hi'], decimals)}]")

    caption = (f"Utility and over-refusal per ICET layer{f' ({label})' if label else ''}. "
               f"VQA accuracy: {ACCURACY_TEXT.get(metric, metric)} (%); utility reward: "
               f"{judge or 'utility reward model'}; XSTest: safe prompts refused by the keyword "
               f"judge (%). Brackets: {round(settings['ci'] * 100)}% bootstrap CI, seed "
               f"{settings['seed']}. Resampling unit: the question (VQA) and the prompt "
               f"(XSTest), one row each.")
    lines = [caption, "",
             "| model | variant | layer | VQA acc % | utility reward | XSTest refusal % |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['layer']} | {cell(r, 'vqa_accuracy')} "
                     f"| {cell(r, 'utility_reward', 2)} | {cell(r, 'xstest_refusal')} |")
    write_text(out_md, "\n".join(lines) + "\n")
    write_latex(out_tex, ["model", "variant", "layer", "VQA acc %", "utility reward",
                          "XSTest refusal %"],
                [[r["model"], r["variant"], r["layer"], cell(r, "vqa_accuracy"),
                  cell(r, "utility_reward", 2), cell(r, "xstest_refusal")] for r in rows],
                caption)
    logger.info("utility table: %d rows", len(rows))
    return rows


def _matrix(rows: list[dict], key: str, ids: list[str], layers: list[int],
            scale: float) -> np.ndarray:
    """questions x layers of one value (NaN where missing)."""
    out = np.full((len(ids), len(layers)), np.nan)
    index, column = {i: n for n, i in enumerate(ids)}, {l: n for n, l in enumerate(layers)}
    for r in rows:
        value = r.get(key)
        if value is not None and int(r["layer"]) in column:
            out[index[str(r["id"])], column[int(r["layer"])]] = scale * float(value)
    return out


def table3_rows(vqa_files: Iterable, groups: dict[str, dict[str, list[int]]],
                num_layers: dict[str, int], bootstrap: dict | None = None) -> list[dict]:
    """The paper's Table 3 shape: per (model, layer group), VQA accuracy (%) and utility
    reward, original and aligned, each with a paired bootstrap CI over questions (module
    docstring). `groups[model]` maps group names to inclusive [lo, hi] ICET layers."""
    settings = bootstrap_settings(bootstrap)
    n, ci = settings["n_resamples"], settings["ci"]
    alpha = (1.0 - ci) / 2.0
    by_model: dict[tuple[str, str], list[dict]] = {}
    for row in read_utility_scores(vqa_files):
        by_model.setdefault((row["model"], row["variant"]), []).append(row)
    out = []
    for model in sorted({m for m, _ in by_model}):
        if model not in groups:
            continue
        expanded = layer_groups(num_layers[model], dict(groups[model]))
        results = {g: {"model": model, "layer_group": g} for g in expanded}
        for variant in VARIANTS:
            rows = by_model.get((model, variant), [])
            ids = sorted({str(r["id"]) for r in rows})
            layers = sorted({int(r["layer"]) for r in rows})
            draws = (np.random.default_rng(settings["seed"]).integers(0, len(ids), size=(n, len(ids)))
                     if ids else None)
            for key, scale in (("vqa_accuracy", 100.0), ("utility_reward", 1.0)):
                source = "correct" if key == "vqa_accuracy" else "utility_reward"
                matrix = _matrix(rows, source, ids, layers, scale)
                for g, members in expanded.items():
                    cols = [layers.index(l) for l in members if l in layers]
                    name = f"{key}_{variant}"
                    result = results[g]
                    result.setdefault("layers", [l for l in members if l in layers])
                    if not cols or draws is None or np.isnan(matrix[:, cols]).all():
                        result.update({name: math.nan, f"{name}_lo": math.nan,
                                       f"{name}_hi": math.nan})
                        continue
                    sub = matrix[:, cols]
                    with np.errstate(invalid="ignore"):
                        point = float(np.nanmean(np.nanmean(sub, axis=0)))
                        usable = ~np.isnan(sub)
                        sums = np.where(usable, sub, 0.0)[draws].sum(axis=1)
                        counts = usable[draws].sum(axis=1)
                        reps = np.nanmean(sums / counts, axis=1)
                    reps = reps[~np.isnan(reps)]
                    if reps.size and np.allclose(reps, reps[0]):
                        lo = hi = point
                    else:
                        lo, hi = (float(x) for x in np.quantile(reps, [alpha, 1 - alpha]))
                    result.update({name: point, f"{name}_lo": lo, f"{name}_hi": hi})
                    result["n_questions"] = max(result.get("n_questions", 0), len(ids))
        out.extend(results.values())
    return out


def write_table3(vqa_files: Iterable, groups: dict, num_layers: dict, out_csv: str, out_md: str,
                 bootstrap: dict | None = None, *, label: str | None = None,
                 judge: str | None = None, metric: str = "vqa", out_tex: str | None = None,
                 log: str | None = None) -> list[dict]:
    """Write Table 3 (utility per layer group, original vs aligned) as CSV, Markdown, LaTeX."""
    logger = setup_logging(log, "utility")
    settings = bootstrap_settings(bootstrap)
    rows = table3_rows(vqa_files, groups, num_layers, settings)
    for r in rows:
        layers = r.get("layers", [])
        r["layers"] = (f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else
                       str(layers[0]) if layers else "none")
    write_csv(out_csv, [{c: (fmt(r.get(c), 4) if isinstance(r.get(c), float) else r.get(c))
                         for c in TABLE3_COLUMNS} for r in rows], TABLE3_COLUMNS)

    def cell(row, key, decimals):
        if math.isnan(row.get(key, math.nan)):
            return NOT_RUN
        return (f"{fmt(row[key], decimals)} [{fmt(row[key + '_lo'], decimals)}, "
                f"{fmt(row[key + '_hi'], decimals)}]")

    caption = (f"**Table 3: utility per layer group, original vs L-PPO aligned"
               f"{f' ({label})' if label else ''}.** VQA accuracy: "
               f"{ACCURACY_TEXT.get(metric, metric)} (%); utility reward: "
               f"{judge or 'utility reward model'}. A group's value is the mean over its layers "
               f"of the per-layer means. Brackets: {round(settings['ci'] * 100)}% percentile "
               f"bootstrap CI ({settings['n_resamples']} resamples, questions drawn once for all "
               f"layers of a group, bootstrap seed {settings['seed']}). Resampling unit: the "
               f"question. Per-layer values: tables/utility.md.")
    header = ["model", "layer group", "layers", "VQA acc % original", "VQA acc % aligned",
              "utility reward original", "utility reward aligned"]
    body = [[r["model"], r["layer_group"], r["layers"],
             cell(r, "vqa_accuracy_original", 1), cell(r, "vqa_accuracy_aligned", 1),
             cell(r, "utility_reward_original", 2), cell(r, "utility_reward_aligned", 2)]
            for r in rows]
    lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    write_text(out_md, "\n".join(lines) + "\n")
    write_latex(out_tex, header, body, caption)
    logger.info("table 3: %d rows", len(rows))
    return rows


def write_utility_tables(vqa_files: Iterable, xstest_files: Iterable, out: dict[str, str],
                         bootstrap: dict | None, *, groups: dict, num_layers: dict,
                         label: str | None = None, judge: str | None = None,
                         metric: str = "vqa", log: str | None = None) -> None:
    """Rule table_utility: the per-layer utility table (out csv/md/tex) and Table 3 beside it
    (out table3_csv/table3_md/table3_tex)."""
    vqa_files, xstest_files = list(vqa_files), list(xstest_files)
    write_utility_table(vqa_files, xstest_files, out["csv"], out["md"], bootstrap, label=label,
                        judge=judge, out_tex=out["tex"], metric=metric, log=log)
    write_table3(vqa_files, groups, num_layers, out["table3_csv"], out["table3_md"], bootstrap,
                 label=label, judge=judge, metric=metric, out_tex=out["table3_tex"], log=log)


def vqa_drop_check(rows: list[dict], model: str, layer: int, max_drop: float
                   ) -> tuple[str, bool, str] | None:
    """(what, passed, numbers) of "VQA accuracy at `layer` drops by at most `max_drop`
    points after L-PPO", from utility.csv rows (None if either variant is missing).

    Judged on the paired change (the same questions before and after): it fails when the
    whole paired 95 % CI of the drop lies above `max_drop`, so a drop within the set's noise
    does not fail it; the set must be large enough that a real drop of twice the allowance
    cannot hide in that noise (the toy's 200 questions: a CI of about +-4 points).
    """
    def value(row, key):
        text = row.get(key)
        return float(text) if text not in (None, "") else math.nan

    cells = {r["variant"]: r for r in rows if r["model"] == model and int(r["layer"]) == layer}
    before, after = cells.get("original"), cells.get("aligned")
    if before is None or after is None:
        return None
    drop = -value(after, "vqa_change")
    lo, hi = -value(after, "vqa_change_hi"), -value(after, "vqa_change_lo")
    if math.isnan(drop):  # no paired change recorded: the two accuracies
        drop = lo = hi = value(before, "vqa_accuracy") - value(after, "vqa_accuracy")
    return (f"VQA accuracy at the default layer ICET-{layer} drops by at most {max_drop:g} "
            f"points (fails if the paired 95% CI of the drop lies above it)", lo <= max_drop,
            f"{value(before, 'vqa_accuracy'):.1f} -> {value(after, 'vqa_accuracy'):.1f} %, "
            f"drop {drop:+.1f} [{lo:+.1f}, {hi:+.1f}] (n {after.get('vqa_n', '?')})")
