"""On the finished reduced toy run (tests/workflow/test_dag.py's `toy_run`): nothing changed
after its job flows on silently, a speed knob reruns nothing, and the command line means
what it says. A test that runs jobs works on a copy of the run, so a job it makes fail
(Snakemake deletes a job's outputs before running it) leaves the shared run intact.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_dag import CI_CONFIG, ROOT, RUN, SNAKEMAKE, run_snakemake, snakemake_env, toy_run  # noqa: F401

pytestmark = [pytest.mark.dag, pytest.mark.xdist_group("dag")]


@pytest.fixture
def copy(toy_run, tmp_path):
    workdir, _ = toy_run
    target = tmp_path / "run"
    shutil.copytree(workdir, target, symlinks=True)
    return target


def verify(workdir):
    return subprocess.run([sys.executable, "-m", "icet", "verify", RUN], cwd=workdir,
                          capture_output=True, text=True)


def planned(result) -> set[str]:
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return set()
    table = text.split("Job stats:")[1].split("\n\n")[0]
    import re

    return {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}


def test_a_cut_shard_stops_its_scorer_with_one_line_in_the_log(copy):
    shard = copy / RUN / "sweep/toy-llava/original/cp/layer-02.jsonl"
    lines = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(lines[:6]))
    manifest = (copy / RUN / "manifest.json").read_bytes()
    result = run_snakemake(copy, "--forcerun", "score_testset")
    assert result.returncode != 0
    log = copy / "logs/toy-ci/score_testset/toy-llava/original/cp.log"
    assert log.read_text().splitlines()[-1].startswith(
        f"icet: changed shard: {RUN}/sweep/toy-llava/original/cp/layer-02.jsonl (index "
        f"{RUN}/sweep/toy-llava/original/cp/chunk-00.json), 6 of 9 rows")
    assert (copy / RUN / "manifest.json").read_bytes() == manifest  # not rewritten
    checked = verify(copy)
    assert checked.returncode == 1 and "layer-02.jsonl" in checked.stdout


def test_a_tampered_score_file_stops_the_tables_and_the_manifest(copy):
    scores = copy / RUN / "scores/toy-llava/original/cp.jsonl"
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    flipped = next(r for r in rows if r["unsafe"] == 0)
    flipped["unsafe"], flipped["guard_verdict"] = 1, "unsafe"
    scores.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = (copy / RUN / "manifest.json").read_bytes()
    result = run_snakemake(copy)
    assert result.returncode != 0
    assert f"icet: {RUN}/scores/toy-llava/original/cp.jsonl: changed after rule score_testset " \
           "wrote it" in result.stdout + result.stderr
    assert (copy / RUN / "manifest.json").read_bytes() == manifest
    checked = verify(copy)
    assert checked.returncode == 1
    assert f"{RUN}/scores/toy-llava/original/cp.jsonl: changed after rule score_testset" in checked.stdout


def test_a_changed_image_fails_verify(copy):
    from PIL import Image

    data = copy / "resources/toy/data"
    first = json.loads((data / "cp.jsonl").read_text().splitlines()[0])
    path = data / first["image"]
    image = Image.open(path).convert("RGB")
    r, g, b = image.getpixel((0, 0))
    image.putpixel((0, 0), ((r + 1) % 256, g, b))
    image.save(path)
    checked = verify(copy)
    assert checked.returncode == 1
    assert f"changed image: resources/toy/data/{first['image']} (swept into {RUN}/sweep/" \
           in checked.stdout


def test_speed_knobs_rerun_nothing(toy_run, tmp_path):
    """Batch sizes, the sweep engine and L-PPO's checkpointing only tune speed and memory:
    changing them must not rerun (and so delete) the finished L-PPO adapter, or anything."""
    workdir, _ = toy_run
    knobs = tmp_path / "knobs.yaml"
    knobs.write_text("judges: {reward: {batch_size: 7}, guard: {batch_size: 5}}\n"
                     "generation: {batch_size: 3}\nsweep: {engine: naive, batch_size: 9}\n"
                     "lppo: {reward_batch_size: 2, grad_accum: 2, gradient_checkpointing: true}\n")
    result = run_snakemake(workdir, "-n", "--configfile", str(ROOT / "toy" / "toy.yaml"),
                           str(CI_CONFIG), str(knobs))
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned(result) == set(), planned(result)
    # the same with the toy profile putting toy/toy.yaml back under the user's files
    result = run_snakemake(workdir, "-n", "--configfile", str(CI_CONFIG), str(knobs))
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned(result) == set(), planned(result)
    # a nested --config override (strings from Snakemake) takes the schema's types
    nested = run_snakemake(workdir, "-n", "--config", "judges={guard: {batch_size: 32}}")
    assert nested.returncode == 0, nested.stderr[-2000:]
    assert planned(nested) == set()


def test_the_toy_profile_keeps_its_config_under_a_users_configfile(tmp_path):
    """`--profile toy --configfile my.yaml` used to drop toy/toy.yaml and plan the paper run."""
    mine = tmp_path / "my.yaml"
    mine.write_text("bootstrap: {n_resamples: 100}\n")
    result = subprocess.run([SNAKEMAKE, "--profile", "toy", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(mine), "-n"],
                            cwd=ROOT, env=snakemake_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned(result)
    assert "train_toy_stage" in jobs and not any(j.startswith("download") for j in jobs), jobs
    assert "results/toy/manifest.json" in result.stdout


def test_a_target_after_forcerun_stops_with_one_line(toy_run):
    workdir, _ = toy_run
    result = run_snakemake(workdir, "-n", "--forcerun", "score_testset", "sweep")
    assert result.returncode != 0
    assert ("icet: command line: sweep after --forcerun/-R is read as a rule to force, not a "
            "target") in result.stderr


def test_the_html_report_holds_the_summary_and_the_reproduction_report(copy):
    report = copy / RUN / "report.html"
    result = run_snakemake(copy, "--report", str(report), timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    html = report.read_text(encoding="utf-8")
    assert "summary.md" in html and "reproduction.md" in html
