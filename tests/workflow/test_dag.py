"""The whole toy DAG, end to end, on a reduced config (tests/data/toy-ci.yaml).

One run (module fixture) in a temporary working directory; the tests read what it wrote.
These exercise the same rules and scripts as `make toy`, only smaller.
"""

import csv
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CI_CONFIG = ROOT / "tests" / "data" / "toy-ci.yaml"
RUN = "results/toy-ci"
SENTINEL = f"sentinel-{secrets.token_hex(16)}"  # HF_TOKEN for the run: must leak nowhere

pytestmark = [pytest.mark.dag, pytest.mark.xdist_group("dag")]


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [SNAKEMAKE, "--profile", "toy", "--snakefile", str(ROOT / "Snakefile"),
            "--directory", str(workdir), "--configfile", str(ROOT / "toy" / "toy.yaml"),
            str(CI_CONFIG), *args]


def snakemake_env(env: dict | None = None) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "ICET_NO_PROGRESS": "1", **(env or {})}


def run_snakemake(workdir: Path, *args: str, env: dict | None = None, timeout: int = 900):
    return subprocess.run(snakemake_command(workdir, *args), cwd=ROOT, env=snakemake_env(env),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")  # shared with tests/workflow/test_report_html.py: one DAG run
def toy_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("toy-dag")
    result = run_snakemake(workdir, env={"HF_TOKEN": SENTINEL})
    assert result.returncode == 0, result.stderr[-6000:]
    return workdir, result


def test_every_output_is_written(toy_run):
    workdir, _ = toy_run
    for name in ("tables/table2.csv", "tables/table2.md", "tables/layers.csv",
                 "tables/layers.md", "tables/utility.csv", "tables/utility.md",
                 "figures/figure3.png", "figures/lppo-toy-llava.png", "summary.md",
                 "reproduction.md", "manifest.json"):
        path = workdir / RUN / name
        assert path.exists() and path.stat().st_size > 0, name


def test_time_table_is_printed(toy_run):
    _, result = toy_run
    assert "Time per rule" in result.stderr
    assert "| sweep_shard |" in result.stderr


def test_second_run_recomputes_nothing(toy_run):
    workdir, _ = toy_run
    result = run_snakemake(workdir, "-n")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_responses_cover_every_layer_and_row(toy_run):
    workdir, _ = toy_run
    cp = [json.loads(l) for l in (workdir / "resources/toy/data/cp.jsonl").read_text().splitlines()]
    for layer in (0, 2, 6, 11, 12):
        shard = workdir / RUN / f"sweep/toy-llava/original/cp/layer-{layer:02d}.jsonl"
        rows = [json.loads(l) for l in shard.read_text().splitlines()]
        assert [r["id"] for r in rows] == [r["id"] for r in cp]
        assert {r["layer"] for r in rows} == {layer}
        assert all(isinstance(r["response"], str) for r in rows)


def test_table2_has_the_papers_shape(toy_run):
    workdir, _ = toy_run
    rows = list(csv.DictReader(open(workdir / RUN / "tables/table2.csv")))
    assert [(r["test_set"], r["layer_group"]) for r in rows] == [
        (t, g) for t in ("CP", "MR", "AC") for g in ("early", "middle", "late", "average")]
    assert all(r["train_set"] == "RT" for r in rows)
    assert all(r["aligned_status"] == "ok" for r in rows)  # L-PPO ran, aligned cells filled
    assert all(0.0 <= float(r["aasr_original"]) <= 100.0 for r in rows)


def test_scores_carry_every_judge(toy_run):
    workdir, _ = toy_run
    rows = [json.loads(l) for l in
            (workdir / RUN / "scores/toy-llava/original/cp.jsonl").read_text().splitlines()]
    assert len(rows) == 9 * 5  # 3 prompts x 3 images, 5 layers
    for row in rows:
        assert row["guard_verdict"] in ("safe", "unsafe", "unparseable")
        assert 0.0 <= row["toxicity"] <= 1.0
        assert isinstance(row["reward"], float) and isinstance(row["refusal"], bool)


def test_reproduction_report_is_labelled_toy_and_lists_settings(toy_run):
    workdir, _ = toy_run
    text = (workdir / RUN / "reproduction.md").read_text()
    assert "not comparable" in text and "Settings we chose where the paper is silent" in text
    assert "toy guard" in text
    # the toy's prompts: no system turn, the processor's own image preprocessing
    assert ('- system prompt and image preprocessing: {"toy-llava": {"image_preprocessing": '
            '"processor", "system_prompt": null}}') in text


def test_summary_is_labelled_toy(toy_run):
    workdir, _ = toy_run
    text = (workdir / RUN / "summary.md").read_text()
    assert "toy model organism" in text and "not comparable" in text
    assert "Aligned at the default layer" in text


def test_manifest_verifies_and_names_a_changed_file(toy_run):
    workdir, _ = toy_run
    manifest = json.loads((workdir / RUN / "manifest.json").read_text())
    assert manifest["prompting"] == {"toy-llava": {"system_prompt": None, "image_preprocessing": "processor"}}
    text = json.dumps(manifest)
    assert "table2.csv" in text and "layer-00.jsonl" in text
    command = [sys.executable, "-m", "icet", "verify", RUN]
    ok = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    table = workdir / RUN / "tables/layers.md"
    original = table.read_bytes()
    table.write_bytes(original + b"\n")
    try:
        bad = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
        assert bad.returncode == 1 and "layers.md" in bad.stdout
    finally:
        table.write_bytes(original)


def test_hf_token_is_written_nowhere(toy_run):
    workdir, result = toy_run
    assert SENTINEL not in result.stdout + result.stderr
    for folder in ("results", "logs", ".snakemake", "resources"):
        for path in (workdir / folder).rglob("*"):
            if path.is_file():
                assert SENTINEL.encode() not in path.read_bytes(), path


COMPARED = ["tables/table2.csv", "tables/table2.md", "tables/layers.csv", "tables/layers.md",
            "tables/utility.csv", "tables/utility.md", "summary.md"]


def test_killed_run_resumes_keeps_finished_shards_and_matches_a_clean_run(toy_run, tmp_path_factory):
    """SIGKILL the whole run during the sweep; the rerun keeps every finished layer shard
    untouched, redoes the rest, and ends with the same bytes as the uninterrupted run."""
    clean, _ = toy_run
    workdir = tmp_path_factory.mktemp("toy-kill")
    sweep_dir = workdir / RUN / "sweep" / "toy-llava" / "original"
    proc = subprocess.Popen(snakemake_command(workdir), cwd=ROOT, env=snakemake_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline, metas = time.time() + 900, []
    while time.time() < deadline and proc.poll() is None:
        metas = sorted(sweep_dir.rglob("layer-*.meta.json"))
        if metas:
            break
        time.sleep(0.1)
    assert metas, "the run ended or timed out before any sweep shard was finished"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {m.with_suffix("").with_suffix(".jsonl") for m in metas}
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in finished}

    assert run_snakemake(workdir, "--unlock").returncode == 0
    result = run_snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    for path, (data, mtime) in before.items():
        assert (path.read_bytes(), path.stat().st_mtime_ns) == (data, mtime), path
    # Determinism: an interrupted-and-resumed run and a clean one give the same bytes.
    for name in COMPARED:
        assert (workdir / RUN / name).read_bytes() == (clean / RUN / name).read_bytes(), name
    for shard in sorted((clean / RUN / "sweep").rglob("layer-*.jsonl")):
        twin = workdir / shard.relative_to(clean)
        assert twin.read_bytes() == shard.read_bytes(), shard.relative_to(clean)


def test_changing_a_judge_setting_reruns_only_scoring_and_reports(toy_run, tmp_path):
    workdir, _ = toy_run
    changed = tmp_path / "judge.yaml"
    changed.write_text("judges: {keyword: {mode: anywhere, extra_phrases: [i refuse]}}\n")
    result = run_snakemake(workdir, "-n", "--configfile", str(ROOT / "toy" / "toy.yaml"),
                           str(CI_CONFIG), str(changed))
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("Job stats:")[1].split("\n\n")[0]
    planned = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+$", table, re.M)} - {"total"}
    assert "score_testset" in planned
    # scoring and what reads scores (tables, figures, examples, judge agreement, reports)
    assert planned <= {"score_testset", "table2", "table_layers", "table_utility", "figure3",
                       "figure_layers", "figure1", "table_examples", "table_agreement",
                       "report_summary", "report_reproduction", "manifest", "all"}, planned
