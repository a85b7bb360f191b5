"""Per-layer metric tables and the paper's Table 2 (AASR/ATS/ATR by layer group): CSV,
Markdown and LaTeX (icet.report.latex).

CSV cells carry 4 decimals and Markdown 2, always formatted the same way, so a rerun on the
same scores gives the same bytes and a diff shows only real changes.
"""

from __future__ import annotations

import math
import os
from typing import Iterable, Sequence

from icet.datasets import titles as set_titles
from icet.errors import IcetError
from icet.io import write_csv, write_text
from icet.logs import setup_logging
from icet.report.latex import write_latex
from icet.stats import (METRICS, bootstrap_settings, group_metrics, layer_groups,
                        layer_metrics, load_scores, metrics_of, unit_key)

TABLE2_VALUES = ["aasr_original", "aasr_aligned", "ats_original", "ats_aligned",
                 "atr_original", "atr_aligned"]
TABLE2_COLUMNS = (["train_set", "test_set", "layer_group"] + TABLE2_VALUES
                  + [f"{c}_{end}" for c in TABLE2_VALUES for end in ("lo", "hi")]
                  + ["aligned_status", "layers", "n_unparseable_original",
                     "n_unparseable_aligned"])
LAYER_COLUMNS = ["model", "variant", "testset", "layer", "n", "n_unparseable",
                 "asr", "asr_lo", "asr_hi", "ts", "ts_lo", "ts_hi", "tr", "tr_lo", "tr_hi",
                 "refusal", "refusal_lo", "refusal_hi"]
# Further ASR judges (plug-ins of icet.judges.base beside the guard, e.g. asr_harmbench):
# Table 2 gets "a<metric>_<variant>" columns for each the scores carry, after the paper's.
NOT_RUN = "not run"  # aligned cells when no L-PPO scores exist for that test set
# The paper's Table 2 order; any other safety set follows alphabetically. How a set is named
# (CP, MR, AC, ...) is its data-set plug-in's title (icet.datasets).
TABLE2_ORDER = ("cp", "mr", "ac")


def fmt(value, decimals: int) -> str:
    """Fixed-decimal text; NaN/None -> "" and no "-0.00"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{float(value):.{decimals}f}"
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text


def _csv_row(row: dict, columns: Sequence[str]) -> dict:
    return {c: fmt(row.get(c), 4) if isinstance(row.get(c), float) else row.get(c)
            for c in columns}


def _with_ci(row: dict, key: str) -> str:
    value = fmt(row.get(key), 2)
    if not value:
        return "n/a"
    lo, hi = fmt(row.get(f"{key}_lo"), 2), fmt(row.get(f"{key}_hi"), 2)
    return f"{value} [{lo}, {hi}]" if lo and hi else value


def _pipe_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def _layer_span(layers: list[int]) -> str:
    if not layers:
        return "none"
    if layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(str(l) for l in layers)


def resampling_unit(frame, settings: dict) -> str:
    """The bootstrap's resampling unit in words, with each test set's prompt and row counts
    (one layer's worth: every layer runs the same rows), e.g. "CP 10 prompts / 100 rows"."""
    if settings.get("unit", "prompt") == "row":
        return "Resampling unit: the row (response), each resampled independently."
    counts = []
    if len(frame):
        one = frame.drop_duplicates(["testset", "id"])
        for testset in sorted(one["testset"].unique()):
            sub = one[one["testset"] == testset]
            per = unit_key(testset)  # what a cluster is: a prompt, or the set's own unit
            counts.append(f"{set_titles([testset])[testset]} "
                          f"{sub['cluster'].nunique()} {per}s / {len(sub)} rows")
    return ("Resampling unit: the prompt (rows sharing a prompt text, e.g. one CP prompt "
            "with its images, are drawn together)" + (f": {'; '.join(counts)}." if counts else "."))


def caption(what: str, frame, judge: str | None, label: str | None, settings: dict,
            extra: str = "", grouped: bool = False) -> str:
    """One caption line naming the judge, the run seed(s), the model(s), the CI method and
    its resampling unit."""
    seeds = sorted({str(s) for s in frame["seed"].dropna().unique()}) if len(frame) else []
    models = sorted(frame["model"].unique()) if len(frame) else []
    pairing = ""
    if grouped:  # only layer-group intervals depend on how prompts are drawn across layers
        pairing = (", prompts drawn once for all layers" if settings["paired"]
                   else ", prompts resampled per layer")
    toy = f" ({label})" if label else ""
    return (f"**{what}{toy}.** Judge: {judge or 'unnamed'}; seed: {', '.join(seeds) or 'unknown'}; "
            f"model: {', '.join(models) or 'none'}.{extra} "
            f"Brackets: {round(settings['ci'] * 100)}% percentile bootstrap CI "
            f"({settings['n_resamples']} resamples{pairing}, bootstrap seed "
            f"{settings['seed']}). {resampling_unit(frame, settings)}")


def write_layer_table(score_files: Iterable[str | os.PathLike], out_csv: str | os.PathLike,
                      out_md: str | os.PathLike, bootstrap: dict | None = None, *,
                      judge: str | None = None, label: str | None = None,
                      kinds: Sequence[str] | None = None, out_tex: str | os.PathLike | None = None,
                      log: str | os.PathLike | None = None) -> list[dict]:
    """Write ASR/TS/TR/refusal per (model, variant, testset, layer) with CIs; return the rows."""
    logger = setup_logging(log, "tables")
    settings = bootstrap_settings(bootstrap)
    frame = load_scores(score_files, kinds=kinds)
    rows = layer_metrics(frame, settings)
    logger.info("layer table: %d rows from %d scores", len(rows), len(frame))
    write_csv(out_csv, [_csv_row(r, LAYER_COLUMNS) for r in rows], LAYER_COLUMNS)
    header = ["model", "variant", "test set", "layer", "n", "unparseable", "ASR %", "TS",
              "TR", "refusal %"]
    body = [[r["model"], r["variant"], r["testset"], str(r["layer"]), str(r["n"]),
             str(r["n_unparseable"]), _with_ci(r, "asr"), _with_ci(r, "ts"), _with_ci(r, "tr"),
             _with_ci(r, "refusal")] for r in rows]
    text = caption("Safety metrics per image-encoder layer (ICET-l)", frame, judge, label,
                   settings, " ASR excludes unparseable verdicts.")
    write_text(out_md, text + "\n\n" + _pipe_table(header, body))
    write_latex(out_tex, header, body, text)
    return rows


def extra_asr_metrics(frame) -> dict[str, str]:
    """{metric: judge title} of the further ASR judges whose column the scores carry."""
    from icet.judges.base import registry

    titles = {cls.metric[0]: cls.title for cls in registry().values()
              if cls.role == "asr" and cls.metric}
    return {m: titles[m] for m in metrics_of(frame) if m not in METRICS and m in titles}


def write_table2(score_files: Iterable[str | os.PathLike], groups: dict[str, Sequence[int]],
                 out_csv: str | os.PathLike, out_md: str | os.PathLike,
                 bootstrap: dict | None = None, train_set: str | None = None,
                 testset_names: dict[str, str] | None = None, *,
                 num_layers: int | None = None, judge: str | None = None,
                 label: str | None = None, kinds: Sequence[str] | None = None,
                 out_tex: str | os.PathLike | None = None,
                 log: str | os.PathLike | None = None) -> list[dict]:
    """Write the paper's Table 2 for one model: per test set, each layer group then "average".

    `groups` maps names to inclusive [lo, hi] ICET layers; `num_layers` (N) bounds them and
    defaults to the largest layer scored. Test sets follow `testset_names` order (default:
    the paper's, TABLE2_ORDER), others after it alphabetically under their data set's title.
    Returns the CSV rows.
    """
    logger = setup_logging(log, "tables")
    settings = bootstrap_settings(bootstrap)
    if train_set is None:  # the config's (the schema's default), named as test sets are
        from icet import schemas

        train_set = schemas.default("config", "train_set").upper()
    names = set_titles(TABLE2_ORDER) if testset_names is None else dict(testset_names)
    frame = load_scores(score_files, kinds=kinds)
    if frame.empty:
        raise IcetError("table 2: no score rows in the given files")
    models = sorted(frame["model"].unique())
    if len(models) > 1:
        raise IcetError(f"table 2: one model per table, got {', '.join(models)}")
    top = int(frame["layer"].max()) if num_layers is None else num_layers
    expanded = layer_groups(top, dict(groups))
    stats = {(r["variant"], r["testset"], r["group"]): r
             for r in group_metrics(frame, expanded, settings)}
    extra = extra_asr_metrics(frame)
    extra_values = [f"a{m}_{v}" for m in extra for v in ("original", "aligned")]
    columns = TABLE2_COLUMNS + extra_values + [f"{c}_{e}" for c in extra_values for e in ("lo", "hi")]
    testsets = set(frame["testset"].unique())
    order = [t for t in names if t in testsets] + sorted(testsets - set(names))
    rows = []
    for testset in order:
        aligned_run = ("aligned", testset, "average") in stats
        for group in list(expanded) + ["average"]:
            title = names.get(testset) or set_titles([testset])[testset]
            row = {"train_set": train_set, "test_set": title,
                   "layer_group": group,
                   "aligned_status": "ok" if aligned_run else NOT_RUN,
                   "layers": _layer_span(stats[("original", testset, group)]["layers"]
                                         if ("original", testset, group) in stats else [])}
            for variant in ("original", "aligned"):
                source = stats.get((variant, testset, group), {})
                for metric in ("asr", "ts", "tr", *extra):
                    for end in ("", "_lo", "_hi"):
                        row[f"a{metric}_{variant}{end}"] = source.get(f"{metric}{end}", math.nan)
                # guard verdicts left out of the cell's ASR (unparseable): shown beside it
                row[f"n_unparseable_{variant}"] = source.get("n_unparseable")
            if group != "average":
                used = stats.get(("original", testset, group), {}).get("layers", [])
                missing = [l for l in expanded[group] if l not in used]
                if missing:
                    logger.warning("table 2: test set %s, group %s: layers %s not scored; "
                                   "averaging over %s", testset, group,
                                   _layer_span(missing), _layer_span(used))
            rows.append(row)
    logger.info("table 2: %d rows, %d test sets, model %s", len(rows), len(order), models[0])
    write_csv(out_csv, [_csv_row(r, columns) for r in rows], columns)
    header = ["train set", "test set", "layer group", "layers", "AASR original",
              "AASR aligned", "ATS original", "ATS aligned", "ATR original", "ATR aligned"]
    header += [f"AASR ({title}) {v}" for title in extra.values() for v in ("original", "aligned")]
    header.append("unparseable (original / aligned)")
    body = []
    for r in rows:
        cells = [r["train_set"], r["test_set"], r["layer_group"], r["layers"]]
        for metric in ["aasr", "ats", "atr"] + [f"a{m}" for m in extra]:
            cells.append(_with_ci(r, f"{metric}_original"))
            cells.append(_with_ci(r, f"{metric}_aligned")
                         if r["aligned_status"] == "ok" else NOT_RUN)
        cells.append(f"{r['n_unparseable_original']} / {r['n_unparseable_aligned']}"
                     if r["aligned_status"] == "ok" else f"{r['n_unparseable_original']} / -")
        body.append(cells)
    text = caption(f"Table 2: layer-group averages, L-PPO trained on {train_set}", frame,
                   judge, label, settings,
                   " AASR/ATS/ATR = mean over a group's layers of per-layer ASR %, "
                   "toxicity x 100, reward; average = mean of the groups. AASR excludes "
                   "unparseable guard verdicts; their count is in the last column."
                   + "".join(f" AASR ({title}): the same from {title}'s verdicts (unparseable "
                             f"ones excluded)." for title in extra.values()), grouped=True)
    write_text(out_md, text + "\n\n" + _pipe_table(header, body))
    write_latex(out_tex, header, body, text)
    return rows
