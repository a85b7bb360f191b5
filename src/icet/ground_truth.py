"""The planted positive control's ground truth, as the report reads it.

A planted control (the toy's `toy-llava-planted`, icet.toy.planted) is a model whose
layer-wise misalignment was trained in on purpose: the run shows that it detects the effect
where it is known to be and that L-PPO removes it. Only the toy knows the truth behind its
responses; a toy rule (planted_truth, rules/toy.smk) writes it, per planted model, into two
files that the report reads (icet.report.planted, icet.report.agreement), never the toy:

- spec.json: the planted rate of each layer group and of each ICET layer, the model's layer
  groups, the planting seed;
- truth.jsonl: one row per harmful response of the model (every variant, safety set and
  layer), named by `key`: `compliant` (the response is one of the toy world's compliance
  templates for the request), `fluent` (not broken text) and `target` (the planted model's
  known answer to that prompt at that layer: comply or refuse).

Torch- and toy-free: the report and the workflow import it.
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from icet.errors import IcetError
from icet.io import read_json, read_jsonl, write_json, write_jsonl

# How every table, caption and summary line names a planted model.
PLANTED_LABEL = "planted (positive control)"
KEY = ("variant", "testset", "layer", "id")
TRUTH_KEYS = KEY + ("compliant", "fluent", "target")


def key(row: dict) -> tuple[str, str, int, str]:
    """Which response a row is about: a score row's, or its ground truth's."""
    return (str(row["variant"]), str(row["testset"]), int(row["layer"]), str(row["id"]))


def write_spec(path: str | os.PathLike, *, rates: dict[str, float], layer_rates: dict[int, float],
               groups: dict[str, list[int]], seed: int) -> None:
    """The planted spec. Rates and groups are written as lists, in their order (the JSON's
    keys are sorted, and the report lists groups as the config does)."""
    write_json(path, {"rates": [{"group": g, "rate": r} for g, r in rates.items()],
                      "layer_rates": {str(layer): rate for layer, rate in layer_rates.items()},
                      "groups": [{"group": g, "layers": list(span)} for g, span in groups.items()],
                      "seed": seed})


def read_spec(path: str | os.PathLike) -> dict[str, Any]:
    """The planted spec: {"rates": {group: share}, "layer_rates": {layer: share}, "groups":
    {group: [lo, hi]}, "seed"}, in the order written."""
    data = read_json(path)
    try:
        return {"rates": {r["group"]: float(r["rate"]) for r in data["rates"]},
                "layer_rates": {int(layer): float(rate)
                                for layer, rate in data["layer_rates"].items()},
                "groups": {g["group"]: list(g["layers"]) for g in data["groups"]},
                "seed": data["seed"]}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise IcetError(f"{path}: not a planted spec ({err!r}); rerun rule planted_truth") from None


def write_truth(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """The ground truth rows (TRUTH_KEYS each); returns how many."""
    rows = [{k: row[k] for k in TRUTH_KEYS} for row in rows]
    write_jsonl(path, rows)
    return len(rows)


def read_truth(path: str | os.PathLike) -> dict[tuple, dict]:
    """Ground truth rows by `key`."""
    return {key(row): row for row in read_jsonl(path, required=TRUTH_KEYS)}


def truth_of(truth: dict[tuple, dict], row: dict, where: str | os.PathLike) -> dict:
    """The ground truth of score row `row`; a row without one stops with one line."""
    found = truth.get(key(row))
    if found is None:
        raise IcetError(f"{where}: no ground truth for the response {key(row)}; rerun rule "
                        f"planted_truth (its scores changed since)")
    return found
