"""Per-layer and per-layer-group safety metrics with bootstrap confidence intervals.

Metrics follow the paper: ASR = share of responses the judge calls unsafe (percent), TS =
mean Detoxify toxicity x 100, TR = mean reward-model score, plus the keyword refusal rate
(percent). A layer group's AASR/ATS/ATR is the mean over the group's LAYERS of the per-layer
means (the paper averages per layer), and Table 2's "average" row is the mean of the groups.

Group confidence intervals: the sampling unit is the prompt, and every layer is run on the
same prompts, so by default one bootstrap replicate draws prompt ids once and uses that
draw at every layer of the group ("paired"). This keeps the correlation between layers (a
prompt that breaks layer 3 tends to break layer 4); resampling each layer independently
would pretend the layers saw fresh prompts and make the group interval too narrow. Pass
`paired=False` in the bootstrap settings to resample prompts within each layer separately.

Resampling unit: the prompt TEXT, not the row. CP is 10 prompts x 10 images: its
100 rows are 10 clusters of 10 correlated rows (a prompt that breaks with one image tends to
break with the others), and resampling rows as independent makes CIs too narrow. So one
bootstrap draw picks prompts (clusters) with replacement and takes every row of each drawn
prompt (cluster bootstrap; the mean is the ratio of drawn sums to drawn counts). Where every
row has its own prompt (MR, AC) a cluster is one row and the draws, hence the numbers, are
exactly the row bootstrap's. A data set whose rows all share one prompt text declares another
key as its unit (icet.datasets, `DataSet.unit`: SafeBench's `request`, the question its image
carries). `unit: row` in the bootstrap settings restores row resampling. Score rows without
their set's unit key count as their own cluster (their id).

The metrics come from the judge plug-ins (icet.judges.base): each judge's `metric` names
its statistic, score column and scale. Every score file has the required judges' columns
(METRICS); a further judge's metric (e.g. HarmBench's ASR, asr_harmbench) is computed
wherever its column is in the scores (`metrics_of`), after the required ones.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from icet.errors import IcetError
from icet.judges.base import SCORED_ROLES, registry
from icet.rows import SCORE_KEYS, VARIANTS, read_scores, score_number  # noqa: F401 (the score-row contract)

# metric name -> (score-row key, scale): percent for rates, raw for the reward model. The
# required judges' (asr: unsafe, ts: toxicity, tr: reward, refusal: refusal) in every file;
# EXTRA_METRICS: the further scoring judges', used where their column is present.
METRICS: dict[str, tuple[str, float]] = {
    cls.metric[0]: (cls.metric[1], cls.metric[2]) for cls in registry().values()
    if cls.required and cls.metric}
EXTRA_METRICS: dict[str, tuple[str, float]] = {
    cls.metric[0]: (cls.metric[1], cls.metric[2]) for cls in registry().values()
    if not cls.required and cls.metric and cls.role in SCORED_ROLES}
# VARIANTS (table/plot order: the model before, then after L-PPO) and SCORE_KEYS live with
# the score-row contract, icet.rows, which also checks every row load_scores reads.


def metrics_of(frame: pd.DataFrame) -> dict[str, tuple[str, float]]:
    """The metrics a score table supports: METRICS, then each extra judge's it has a column of."""
    extra = {m: v for m, v in EXTRA_METRICS.items() if v[0] in frame.columns}
    return {**METRICS, **extra}


UNITS = ("prompt", "row")
# The order settings are recorded in (the organism study's eval files hold them).
BOOTSTRAP_KEYS = ("n_resamples", "ci", "seed", "paired", "unit")


def bootstrap_settings(bootstrap: dict | None) -> dict:
    """`bootstrap` with the schema's defaults filled in (the config's `bootstrap` block; the
    seed is the run's, as the workflow passes it); unknown or out-of-range settings stop."""
    from icet import schemas

    given = dict(bootstrap or {})
    unknown = sorted(set(given) - set(BOOTSTRAP_KEYS))
    if unknown:
        raise IcetError(f"bootstrap settings: unknown key(s) {', '.join(unknown)}")
    given.setdefault("seed", schemas.default("config", "seed"))
    filled = schemas.fill(given, "config", "bootstrap")
    settings = {key: filled[key] for key in BOOTSTRAP_KEYS}
    if not isinstance(settings["n_resamples"], int) or settings["n_resamples"] < 1:
        raise IcetError(f"bootstrap settings: n_resamples must be a positive int, "
                        f"got {settings['n_resamples']!r}")
    if not 0.0 < float(settings["ci"]) < 1.0:
        raise IcetError(f"bootstrap settings: ci must be in (0, 1), got {settings['ci']!r}")
    if settings["unit"] not in UNITS:
        raise IcetError(f"bootstrap settings: unit must be one of {', '.join(UNITS)}, "
                        f"got {settings['unit']!r}")
    if not isinstance(settings["seed"], int):
        raise IcetError(f"bootstrap settings: seed must be an int, got {settings['seed']!r}")
    return settings


def _percentiles(replicates: np.ndarray, ci: float) -> tuple[float, float]:
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _cluster_codes(clusters: Sequence) -> np.ndarray:
    """Cluster index per row, numbered in order of first appearance (so one-row clusters
    give the row bootstrap's exact draws)."""
    codes, _ = pd.factorize(pd.Series(list(clusters), dtype=object), sort=False)
    return codes


def _or_defaults(n_resamples, ci, seed) -> tuple[int, float, int]:
    """Each bootstrap setting as given, or (None) the schema's (`bootstrap_settings`)."""
    if n_resamples is None or ci is None or seed is None:
        filled = bootstrap_settings(None)
        n_resamples = filled["n_resamples"] if n_resamples is None else n_resamples
        ci = filled["ci"] if ci is None else ci
        seed = filled["seed"] if seed is None else seed
    return n_resamples, ci, seed


def bootstrap_ci(values: Sequence, n_resamples: int | None = None, ci: float | None = None,
                 seed: int | None = None, clusters: Sequence | None = None
                 ) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap of the mean; nulls dropped; empty -> NaNs.

    `clusters` (one key per value, e.g. the prompt text) resamples whole clusters: a draw
    takes every value of each drawn cluster (module docstring). None = every value its own.
    Constant data returns the value itself as both bounds (no resampling noise). Settings
    not given: the config's `bootstrap` defaults and the run seed's (`bootstrap_settings`).
    """
    n_resamples, ci, seed = _or_defaults(n_resamples, ci, seed)
    raw = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
    keep = ~np.isnan(raw)
    data = raw[keep]
    if data.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if np.all(data == data[0]):
        return float(data[0]), float(data[0]), float(data[0])
    codes = (np.arange(data.size) if clusters is None
             else _cluster_codes(np.asarray(list(clusters), dtype=object)[keep]))
    k = int(codes.max()) + 1
    sums = np.bincount(codes, weights=data, minlength=k)
    counts = np.bincount(codes, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_resamples, k))
    lo, hi = _percentiles(sums[draws].sum(axis=1) / counts[draws].sum(axis=1), ci)
    return mean, lo, hi


def layer_groups(num_layers: int, groups: dict[str, Sequence[int]]) -> dict[str, list[int]]:
    """Expand inclusive [lo, hi] ranges over ICET layers 0..num_layers into layer lists.

    `num_layers` is N, the encoder's layer count (ICET-l runs over l = 0..N, see
    docs/contracts.md). Overlapping or out-of-range groups stop with the group's name.
    """
    if not isinstance(num_layers, int) or num_layers < 0:
        raise IcetError(f"layer groups: num_layers must be a non-negative int, got {num_layers!r}")
    if not groups:
        raise IcetError("layer groups: no groups given")
    expanded: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, bounds in groups.items():
        if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)):
            raise IcetError(f"layer group '{name}': expected [lo, hi] integers, got {bounds!r}")
        lo, hi = bounds
        if lo > hi:
            raise IcetError(f"layer group '{name}': lo {lo} > hi {hi}")
        if lo < 0 or hi > num_layers:
            raise IcetError(f"layer group '{name}': [{lo}, {hi}] outside layers 0..{num_layers}")
        for layer in range(lo, hi + 1):
            if layer in owner:
                raise IcetError(f"layer group '{name}': layer {layer} overlaps group "
                                f"'{owner[layer]}'")
            owner[layer] = name
        expanded[name] = list(range(lo, hi + 1))
    return expanded


@functools.lru_cache(maxsize=None)
def unit_key(testset: str) -> str:
    """The row key a set's bootstrap clusters by: its data set's `unit`, else the prompt."""
    from icet.datasets import data_set

    spec = data_set(testset)
    return spec.unit if spec is not None else "prompt"


def load_scores(score_files: Iterable[str | os.PathLike],
                kinds: Sequence[str] | None = None) -> pd.DataFrame:
    """Read and check score JSONL files (docs/contracts.md "Scores") into one table.

    `kinds` keeps only rows of those prompt kinds (e.g. ["harmful"]); None keeps all.
    A (model, variant, testset, layer, id) seen twice stops: a file passed twice would
    otherwise double-count silently.
    """
    records = []
    seen: dict[tuple, str] = {}
    extra_columns: list[str] = []
    for path, number, row in read_scores(score_files):  # each row checked (icet.rows)
        layer, refusal = row["layer"], row["refusal"]
        key = (row["model"], row["variant"], row["testset"], layer, row["id"])
        if key in seen:
            raise IcetError(f"{path}: row {number}: id {row['id']!r} already scored for "
                            f"model {key[0]}, variant {key[1]}, testset {key[2]}, "
                            f"layer {layer} (in {seen[key]})")
        seen[key] = str(path)
        if kinds is not None and row["kind"] not in kinds:
            continue
        records.append({
            "id": str(row["id"]), "model": str(row["model"]), "variant": row["variant"],
            "testset": str(row["testset"]), "layer": layer, "kind": row["kind"],
            "unsafe": None if row["unsafe"] is None else float(row["unsafe"]),
            "toxicity": score_number(path, number, "toxicity", row["toxicity"],
                                     "a number in [0, 1] or null", 0.0, 1.0),
            "reward": score_number(path, number, "reward", row["reward"], "a number or null"),
            "refusal": None if refusal is None else float(refusal),
            "seed": row.get("seed"),
            # the bootstrap's resampling unit (module docstring): the prompt text, or the key
            # the row's data set declares
            "cluster": (str(row[unit]) if (unit := unit_key(str(row["testset"]))) in row
                        else f"id:{row['id']}"),
        })
        for column, _ in EXTRA_METRICS.values():
            if column in row:
                records[-1][column] = None if row[column] is None else float(row[column])
                if column not in extra_columns:
                    extra_columns.append(column)
    columns = ["id", "model", "variant", "testset", "layer", "kind", "unsafe", "toxicity",
               "reward", "refusal", "seed", "cluster"] + extra_columns
    frame = pd.DataFrame.from_records(records, columns=columns)
    for column in ["unsafe", "toxicity", "reward", "refusal"] + extra_columns:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    return frame


def _cells(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(model, variant, testset) triples in report order: original before aligned."""
    triples = set(zip(frame["model"], frame["variant"], frame["testset"]))
    return sorted(triples, key=lambda t: (t[0], VARIANTS.index(t[1]), t[2]))


def layer_metrics(frame: pd.DataFrame, bootstrap: dict | None = None) -> list[dict]:
    """One row per (model, variant, testset, layer): n, unparseable count, metrics + CIs."""
    settings = bootstrap_settings(bootstrap)
    rows = []
    for model, variant, testset in _cells(frame):
        cell = frame[(frame["model"] == model) & (frame["variant"] == variant)
                     & (frame["testset"] == testset)]
        for layer in sorted(cell["layer"].unique()):
            sub = cell[cell["layer"] == layer]
            row = {"model": model, "variant": variant, "testset": testset, "layer": int(layer),
                   "n": int(len(sub)), "n_unparseable": int(sub["unsafe"].isna().sum())}
            clusters = sub["cluster"].to_numpy() if settings["unit"] == "prompt" else None
            for name, (key, scale) in metrics_of(frame).items():
                mean, lo, hi = bootstrap_ci(sub[key].to_numpy() * scale,
                                            settings["n_resamples"], settings["ci"],
                                            settings["seed"], clusters=clusters)
                row.update({name: mean, f"{name}_lo": lo, f"{name}_hi": hi})
            rows.append(row)
    return rows


def difference_ci(first: Sequence[tuple], second: Sequence[tuple], n_resamples: int | None = None,
                  ci: float | None = None, seed: int | None = None) -> tuple[float, float, float]:
    """(mean(first) - mean(second), lo, hi): a paired cluster bootstrap of a difference.

    Each argument is (cluster, value) pairs, e.g. (prompt, unsafe) of the rows at two layer
    groups. A draw resamples clusters once and takes both sides' rows of each drawn cluster,
    so what two groups share (the same prompts) cancels: the honest test that two rates
    differ, where two separately resampled CIs that must not overlap is far stricter than
    its stated level. Empty sides -> NaNs.
    """
    n_resamples, ci, seed = _or_defaults(n_resamples, ci, seed)
    if not first or not second:
        return math.nan, math.nan, math.nan
    codes = _cluster_codes([c for c, _ in first] + [c for c, _ in second])
    k = int(codes.max()) + 1
    a_codes, b_codes = codes[:len(first)], codes[len(first):]
    a = np.asarray([float(v) for _, v in first])
    b = np.asarray([float(v) for _, v in second])
    diff = float(a.mean() - b.mean())
    sums = [np.bincount(c, weights=v, minlength=k) for c, v in ((a_codes, a), (b_codes, b))]
    counts = [np.bincount(c, minlength=k).astype(float) for c in (a_codes, b_codes)]
    draws = np.random.default_rng(seed).integers(0, k, size=(n_resamples, k))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = [s[draws].sum(axis=1) / n[draws].sum(axis=1) for s, n in zip(sums, counts)]
    lo, hi = _percentiles(means[0] - means[1], ci)
    return diff, lo, hi


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; all-NaN slices give NaN without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _layer_replicates(matrix: np.ndarray, codes: np.ndarray, draws: np.ndarray | None,
                      n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates (n_resamples x layers) of each layer's mean.

    `matrix` is rows x layers (NaN = no usable score), `codes` each row's cluster (0..K-1).
    With `draws` (paired, n_resamples x K), every layer uses the same resampled clusters;
    without, each layer resamples its own clusters (those with a usable score there).
    """
    k = int(codes.max()) + 1 if codes.size else 0
    replicates = np.full((n_resamples, matrix.shape[1]), np.nan)
    for j in range(matrix.shape[1]):
        column = matrix[:, j]
        usable = ~np.isnan(column)
        sums = np.bincount(codes[usable], weights=column[usable], minlength=k)
        counts = np.bincount(codes[usable], minlength=k).astype(float)
        if draws is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                replicates[:, j] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        else:
            present = np.flatnonzero(counts)
            if present.size:
                index = present[rng.integers(0, present.size, size=(n_resamples, present.size))]
                replicates[:, j] = sums[index].sum(axis=1) / counts[index].sum(axis=1)
    return replicates


def group_metrics(frame: pd.DataFrame, groups: dict[str, list[int]],
                  bootstrap: dict | None = None) -> list[dict]:
    """Per (model, variant, testset): one row per layer group, then an "average" row.

    Group value = mean over the group's layers (those present in the scores) of per-layer
    means; "average" = mean of the group values. `layers` lists the layers actually used.
    """
    settings = bootstrap_settings(bootstrap)
    n_resamples, ci = settings["n_resamples"], settings["ci"]
    rows = []
    for model, variant, testset in _cells(frame):
        cell = frame[(frame["model"] == model) & (frame["variant"] == variant)
                     & (frame["testset"] == testset)]
        present = set(int(v) for v in cell["layer"].unique())
        used = {name: [l for l in layers if l in present] for name, layers in groups.items()}
        columns = sorted({l for layers in used.values() for l in layers})
        cell = cell[cell["layer"].isin(columns)]
        ids = sorted(cell["id"].unique())
        # clusters numbered in id order, so one-row clusters draw exactly as rows did
        first = cell.drop_duplicates("id").set_index("id").reindex(ids)
        keys = first["cluster"] if settings["unit"] == "prompt" else pd.Series(ids, index=ids)
        codes = _cluster_codes(keys.to_numpy())
        n_clusters = int(codes.max()) + 1 if ids else 0
        rng = np.random.default_rng(settings["seed"])
        draws = (rng.integers(0, n_clusters, size=(n_resamples, n_clusters))
                 if settings["paired"] and ids else None)
        results = {name: {"layers": used[name]} for name in groups}
        results["average"] = {"layers": columns}
        for metric, (key, scale) in metrics_of(frame).items():
            matrix = (cell.pivot(index="id", columns="layer", values=key)
                      .reindex(index=ids, columns=columns).to_numpy(dtype=float) * scale)
            point = _nanmean(matrix, axis=0) if columns else np.zeros(0)
            replicates = _layer_replicates(matrix, codes, draws, n_resamples, rng)
            group_points, group_reps = [], []
            for name in groups:
                j = [columns.index(l) for l in used[name]]
                value = float(_nanmean(point[j], axis=0)) if j else math.nan
                reps = _nanmean(replicates[:, j], axis=1) if j else np.full(n_resamples, np.nan)
                group_points.append(value)
                group_reps.append(reps)
                results[name].update(_metric_cells(metric, value, reps, ci))
            average = float(_nanmean(np.asarray(group_points), axis=0))
            average_reps = _nanmean(np.stack(group_reps, axis=1), axis=1)
            results["average"].update(_metric_cells(metric, average, average_reps, ci))
        for name, result in results.items():
            counts = cell[cell["layer"].isin(result["layers"])]
            rows.append({"model": model, "variant": variant, "testset": testset,
                         "group": name, "n_layers": len(result["layers"]),
                         "n_prompts": int(counts["id"].nunique()),
                         "n_clusters": int(counts["cluster"].nunique()),
                         "n_unparseable": int(counts["unsafe"].isna().sum()), **result})
    return rows


def _metric_cells(metric: str, value: float, replicates: np.ndarray, ci: float) -> dict:
    if math.isnan(value):
        return {metric: math.nan, f"{metric}_lo": math.nan, f"{metric}_hi": math.nan}
    finite = replicates[~np.isnan(replicates)]
    if finite.size and np.all(finite == finite[0]):
        # constant data: the interval is the value itself, without summation noise
        return {metric: value, f"{metric}_lo": value, f"{metric}_hi": value}
    lo, hi = _percentiles(replicates, ci)
    return {metric: value, f"{metric}_lo": lo, f"{metric}_hi": hi}
