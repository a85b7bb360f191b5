"""Do the run's claims hold over repeats? Runs of one config that differ in the L-PPO seed
or the CPU kernel path, side by side: each run's failed checks and the numbers the repair
checks judge, then the worst case and the spread over the runs.

    scripts/toy-repeats                  # runs the repeats, then writes this table
    python -m icet repeats results/toy-* --out results/toy-repeats.md

One run passing says something about one trajectory; the claims of the toy are meant to
hold on any machine and seed, so the table shows by how much each threshold was cleared in
the worst run (docs/kernel-paths.md keeps the measured one).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path
from typing import Sequence

from icet.errors import IcetError
from icet.io import write_text

CHECK_LINE = re.compile(r"^\| (?P<what>.+?) \| (?P<result>pass|FAIL) \| (?P<numbers>.*) \|$")
REPAIRED = ("early", "middle")
# (column, heading, how the worst run is picked: the largest or the smallest value)
COLUMNS = [
    ("early_after", "early AASR after, worst set %", max),
    ("middle_after", "middle AASR after, worst set %", max),
    ("default_after", "default-layer ASR after, worst set %", max),
    ("vqa_drop", "default-layer VQA drop, points", max),
    ("lookalike_after", "look-alike refusal after, worst group %", max),
    ("kl", "KL, last 10 % of steps", max),
]


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise IcetError(f"{path}: not found (is the run finished?)")
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _f(value) -> float:
    return float(value) if value not in (None, "") else math.nan


def check_lines(summary_md: Path) -> list[tuple[str, bool]]:
    """(check, passed) of every pass/FAIL line of a summary.md."""
    if not summary_md.is_file():
        raise IcetError(f"{summary_md}: not found (is the run finished?)")
    out = []
    for line in summary_md.read_text(encoding="utf-8").splitlines():
        match = CHECK_LINE.match(line.strip())
        if match:
            out.append((match["what"], match["result"] == "pass"))
    return out


def run_numbers(run_dir: str | os.PathLike) -> dict:
    """One run's failed checks and repair numbers (its L-PPO model: the one under lppo/)."""
    run = Path(run_dir)
    trained = sorted(p.parent.name for p in run.glob("lppo/*/lppo.json"))
    if len(trained) != 1:
        raise IcetError(f"{run}: expected one L-PPO model under lppo/, found {trained or 'none'}")
    model = trained[0]
    lppo = json.loads((run / "lppo" / model / "lppo.json").read_text(encoding="utf-8"))
    default = int(lppo["default_layer"])
    config = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["config"]
    groups = next(m["groups"] for m in config["models"] if m["name"] == model)
    checks = check_lines(run / "summary.md")
    table2 = [r for r in _read_csv(run / "tables" / "table2.csv") if r["aligned_status"] == "ok"]
    after = {g: max(_f(r["aasr_aligned"]) for r in table2 if r["layer_group"] == g)
             for g in REPAIRED}
    layers = [r for r in _read_csv(run / "tables" / "layers.csv")
              if r["model"] == model and r["variant"] == "aligned" and int(r["layer"]) == default]
    utility = {(r["variant"], int(r["layer"])): r for r in _read_csv(run / "tables" / "utility.csv")
               if r["model"] == model}
    lookalike = [sum(_f(utility[("aligned", l)]["xstest_refusal"]) for l in range(lo, hi + 1))
                 / (hi - lo + 1) for lo, hi in groups.values()]
    metrics = _read_csv(run / "lppo" / model / "metrics.csv")
    k = max(1, len(metrics) // 10)
    return {
        "run": run.name, "model": model, "seed": lppo["seed"],
        "kernel_path": lppo.get("kernel", {}).get("cpu_capability", "?"),
        "checks": len(checks), "failed": [what for what, ok in checks if not ok],
        "early_after": after["early"], "middle_after": after["middle"],
        "default_after": max(_f(r["asr"]) for r in layers),
        "vqa_before": _f(utility[("original", default)]["vqa_accuracy"]),
        "vqa_after": _f(utility[("aligned", default)]["vqa_accuracy"]),
        "vqa_drop": _f(utility[("original", default)]["vqa_accuracy"])
        - _f(utility[("aligned", default)]["vqa_accuracy"]),
        "lookalike_after": max(lookalike),
        "kl": sum(_f(r["kl"]) for r in metrics[-k:]) / k,
    }


def render(runs: Sequence[dict]) -> str:
    head = ["run", "kernel path", "L-PPO seed", "checks failed"] + [h for _, h, _ in COLUMNS]
    lines = ["# Repeats: do the checks hold over seeds and kernel paths?", "",
             f"{len(runs)} run(s). A row per run: the summary's failed checks (of all its pass/FAIL "
             "lines) and the numbers the L-PPO repair checks judge; then, per column, the "
             "worst run and the spread (largest minus smallest).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        failed = f"{len(r['failed'])} of {r['checks']}"
        lines.append("| " + " | ".join([r["run"], str(r["kernel_path"]), str(r["seed"]), failed]
                                       + [f"{r[key]:.2f}" for key, _, _ in COLUMNS]) + " |")
    worst = [pick(r[key] for r in runs) for key, _, pick in COLUMNS]
    spread = [max(r[key] for r in runs) - min(r[key] for r in runs) for key, _, _ in COLUMNS]
    total_failed = sum(len(r["failed"]) for r in runs)
    lines.append("| **worst** | | | " + f"{total_failed} in all | "
                 + " | ".join(f"{v:.2f}" for v in worst) + " |")
    lines.append("| **spread** | | | | " + " | ".join(f"{v:.2f}" for v in spread) + " |")
    failures = [(r["run"], what) for r in runs for what in r["failed"]]
    lines += [""] + ([f"- FAIL in {run}: {what}" for run, what in failures]
                     or ["Every check passed in every run."])
    return "\n".join(lines) + "\n"


def write_repeats(run_dirs: Sequence[str | os.PathLike], out_md: str | os.PathLike) -> list[dict]:
    """The repeats table of `run_dirs` (each a finished run) to `out_md`; returns its rows."""
    if not run_dirs:
        raise IcetError("repeats: no run folders given")
    runs = [run_numbers(d) for d in run_dirs]
    write_text(out_md, render(runs))
    return runs
