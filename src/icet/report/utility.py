"""Utility and over-refusal per encoder layer: what alignment must not cost.

VQA: answer accuracy (icet.utility.answer_correct) and the utility reward model's score
(the paper's Table 3 uses both). XSTest: the share of safe-but-scary prompts refused
(keyword judge), the paper's over-refusal measure.
"""

from __future__ import annotations

import os
from typing import Iterable

from icet.io import read_jsonl, write_csv, write_text
from icet.logs import setup_logging
from icet.report.latex import write_latex
from icet.report.tables import fmt
from icet.stats import VARIANTS, bootstrap_ci, bootstrap_settings

UTILITY_COLUMNS = ["model", "variant", "layer", "vqa_n", "vqa_accuracy", "vqa_accuracy_lo",
                   "vqa_accuracy_hi", "utility_reward", "utility_reward_lo", "utility_reward_hi",
                   "xstest_n", "xstest_refusal", "xstest_refusal_lo", "xstest_refusal_hi"]


def _by_cell(files: Iterable[str | os.PathLike]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for path in files:
        for row in read_jsonl(path, required=("model", "variant", "layer")):
            cells.setdefault((row["model"], row["variant"], int(row["layer"])), []).append(row)
    return cells


def utility_rows(vqa_files: Iterable, xstest_files: Iterable, bootstrap: dict | None = None) -> list[dict]:
    """One row per (model, variant, layer): VQA accuracy %, utility reward, XSTest refusal %."""
    settings = bootstrap_settings(bootstrap)
    boot = (settings["n_resamples"], settings["ci"], settings["seed"])
    vqa, xstest = _by_cell(vqa_files), _by_cell(xstest_files)
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
        rows.append(row)
    return rows


def write_utility_table(vqa_files: Iterable, xstest_files: Iterable, out_csv: str, out_md: str,
                        bootstrap: dict | None = None, *, label: str | None = None,
                        judge: str | None = None, out_tex: str | None = None,
                        log: str | None = None) -> list[dict]:
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
               f"VQA accuracy: reference answer contained in the response (%); utility reward: "
               f"{judge or 'utility reward model'}; XSTest: safe prompts refused by the keyword "
               f"judge (%). Brackets: {round(settings['ci'] * 100)}% bootstrap CI, seed "
               f"{settings['seed']}.")
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
