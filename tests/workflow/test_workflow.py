"""The Snakemake workflow itself: lint, both profiles' plans, and config errors at parse time."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args, env=None, cwd=ROOT):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "ICET_SLURM_PARTITION": "gpu", **(env or {})}
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_is_clean():
    result = snakemake("--lint", "--profile", "toy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_toy_plan_covers_every_stage(tmp_path):
    result = snakemake("-n", "--profile", "toy", "--directory", str(tmp_path),
                       "--snakefile", str(ROOT / "Snakefile"))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # 5 sets (cp, mr, ac, vqa, xstest), a model's layers in one job each: the emergent toy
    # and the planted control swept original (10); only the planted one L-PPO-aligned (5).
    assert counts["sweep_shard"] == 10 + 5 and counts["train_toy_stage"] == 5
    assert counts["score_testset"] == 15 and counts["score_utility"] == 3
    assert counts["train_toy_judge"] == 3 and counts["lppo_train"] == 1
    assert counts["figure_layers"] == 2
    # the planted control's ground truth, for the report: one job for its one model
    for rule in ("build_toy_data", "table2", "table_layers", "table_utility", "figure3",
                 "figure1", "figure_lppo", "table_agreement", "planted_truth",
                 "report_summary", "report_reproduction", "manifest"):
        assert counts[rule] == 1, rule
    assert counts["table_examples"] == 3  # the paper's Tables 1, 4, 5


def test_paper_plan_covers_models_sets_and_layers(tmp_path):
    result = snakemake("-n", "--profile", "slurm", "--directory", str(tmp_path),
                       "--snakefile", str(ROOT / "Snakefile"))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # layers 0..24 (25) in chunks of 5 for the two LLaVAs, 0..32 (33 -> 7 chunks) for Mllama,
    # over 5 sets; the aligned re-evaluation for LLaVA-1.5 only.
    # The original variant's sweep (every model) and the aligned one (LLaVA-1.5) in one rule.
    assert counts["sweep_shard"] == (5 + 5 + 7) * 5 + 5 * 5
    # judges as Hub snapshots: guard, reward, utility reward and HarmBench's classifier
    assert counts["download_model"] == 3 and counts["download_judge"] == 4
    assert counts["score_testset"] == 3 * 5 + 5
    assert "gpu=1" in result.stdout and "mem_mb=64000" in result.stdout
    # the same tables and figures as the toy: per-layer curves for each of the three models
    assert counts["figure_layers"] == 3 and counts["table_examples"] == 3
    for rule in ("figure1", "figure3", "figure_lppo", "table2", "table_layers",
                 "table_utility", "table_agreement"):
        assert counts[rule] == 1, rule
    # Llama 3.2 Vision: chunks 00..06 of 5 layers (6 x 5 = 30 < 33 <= 35) for every set,
    # each job with the 11B model's resources from config.yaml.
    blocks = [block.split("\n[")[0] for block in result.stdout.split("rule sweep_shard:")[1:]]
    mllama = [block for block in blocks if "wildcards: model=llama-3.2-11b-vision," in block]
    chunks = {re.search(r"testset=(\w+), chunk=(\d+)", b).groups() for b in mllama}
    assert chunks == {(t, f"{c:02d}") for t in ("cp", "mr", "ac", "vqa", "xstest") for c in range(7)}
    for block in mllama:
        resources = block.split("resources:")[1].split("\n")[0]
        assert all(r in resources for r in ("mem_mb=80000", "runtime=240", "gpu=1", "cpus_per_task=8"))


def test_bad_config_stops_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generation: {max_new_tokens: many}\n")
    result = snakemake("-n", "--profile", "toy", "--configfile", "toy/toy.yaml", str(bad))
    assert result.returncode != 0
    lines = [l for l in result.stderr.splitlines() if "icet: config error" in l]
    assert lines and "generation.max_new_tokens" in lines[0]
    assert "Traceback" not in result.stderr


def test_stage_targets_exist():
    text = (ROOT / "Snakefile").read_text()
    for target in ("all", "datasets", "organism", "sweep", "score", "align", "evaluate",
                   "tables", "figures"):
        assert re.search(rf"^rule {target}:", text, re.M), target


def test_workflow_scripts_are_one_library_call():
    """One library call each, inside a job frame (icet.chain.Job): inputs checked against
    their links before it, the outputs' links written after it."""
    for script in sorted((ROOT / "workflow_scripts").glob("*.py")):
        code = [l for l in script.read_text().splitlines()
                if l.strip() and not l.startswith(("#", '"""', "from ", "import "))]
        calls = [l for l in code if re.match(r"^[a-z_0-9]+\(", l)]
        assert len(calls) == 1, f"{script.name}: {calls}"
        import ast

        body = [node for node in ast.parse(script.read_text()).body
                if not isinstance(node, (ast.Import, ast.ImportFrom))
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert ast.unparse(body[0]) == "job = Job(snakemake)", script.name
        assert ast.unparse(body[-1]) == "job.done()", script.name
        assert len(body) == 3, script.name


# Loaded first by every Python process that has this folder on its PYTHONPATH: icet.toy (and
# every module under it) cannot be imported there.
NO_TOY = '''import importlib.abc
import sys


class NoToy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "icet.toy" or name.startswith("icet.toy."):
            raise ImportError(f"{name}: the toy is not importable in this test")
        return None


sys.meta_path.insert(0, NoToy())
'''


def test_paper_run_never_imports_the_toy(tmp_path):
    """The toy sits behind one door (rules/toy.smk, which only a toy run includes): the paper
    run and its rehearsal parse and plan with icet.toy unimportable."""
    block = tmp_path / "no-toy"
    block.mkdir()
    (block / "sitecustomize.py").write_text(NO_TOY)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(block), os.environ.get("PYTHONPATH")]))}
    # the block holds: the toy itself cannot be imported
    toy = subprocess.run([sys.executable, "-c", "import icet.toy.planted"], env={**os.environ, **env},
                         capture_output=True, text=True)
    assert toy.returncode != 0 and "not importable in this test" in toy.stderr
    for profile in ("slurm", "rehearsal"):
        result = snakemake("-n", "--profile", profile, "--directory", str(tmp_path / profile),
                           "--snakefile", str(ROOT / "Snakefile"), env=env)
        assert result.returncode == 0, f"{profile}: {result.stderr[-3000:]}"
        assert "sweep_shard" in job_counts(result.stdout), profile
