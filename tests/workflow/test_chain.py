"""The chain of custody (icet.chain): a shard cut short, a score file edited or an image
changed after its job ran stops the next job and `icet verify` with one line naming the file,
and no manifest is written over it."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

import icet
from icet.chain import Chain, Job, link_path
from icet.errors import IcetError
from icet.io import write_jsonl
from icet.provenance import verify, write_manifest
from icet.shards import expand, shard_path, write_index
from icet.sweep import swept_inputs

SRC = str(Path(icet.__file__).parents[1])


def snakemake(rule, inputs, outputs, log=None):
    """What Snakemake hands a rule's script, as far as a Job reads it."""
    return SimpleNamespace(rule=rule, input=list(inputs), output=list(outputs),
                           log=[log] if log else [])


@pytest.fixture
def run(tmp_path, monkeypatch):
    """A tiny run in a working directory: a data set with two images, a sweep index over
    two 100-row shards, a score file and a table made from it, each by a Job."""
    monkeypatch.chdir(tmp_path)
    data = Path("resources/data")
    (data / "images").mkdir(parents=True)
    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (8, 8), colour).save(data / "images" / name)
    rows = [{"id": f"cp-{i:04d}", "prompt": f"prompt {i}", "image": f"images/{'ab'[i % 2]}.png",
             "kind": "harmful", "category": "c", "answer": None, "source": "s"} for i in range(100)]
    write_jsonl(data / "cp.jsonl", rows)
    job = Job(snakemake("build", [], [data / "cp.jsonl"]))
    job.done()

    sweep = Path("results/run/sweep/m/original/cp")
    sweep.mkdir(parents=True)
    index = sweep / "chunk-00.json"
    job = Job(snakemake("sweep_shard", [data / "cp.jsonl"], [index]))
    for layer in (0, 1):
        write_jsonl(shard_path(sweep, layer), [{**r, "layer": layer, "response": "no"} for r in rows])
    write_index(index, sweep, [0, 1], inputs=swept_inputs(data / "cp.jsonl",
                                                          [data / r["image"] for r in rows]))
    job.done()

    scores = Path("results/run/scores/m/original/cp.jsonl")
    job = Job(snakemake("score_testset", [index], [scores]))
    write_jsonl(scores, [{"id": r["id"], "layer": 0, "unsafe": 1} for r in rows[:10]])
    job.done()

    table = Path("results/run/tables/layers.csv")
    job = Job(snakemake("table_layers", [scores], [table]))
    table.parent.mkdir(parents=True)
    table.write_text("asr\n100\n")
    job.done()
    return {"data": data, "index": index, "shard": shard_path(sweep, 1), "scores": scores,
            "table": table, "image": data / "images" / "a.png"}


def manifest(run):
    return write_manifest("results/run/manifest.json", config={}, seeds={},
                          files={"results": [str(run["table"]), str(run["scores"])],
                                 "responses": [str(run["index"])], "data": [str(run["data"] / "cp.jsonl")]})


def test_an_untouched_run_has_an_unbroken_chain(run):
    assert Chain(".").problems([str(run["table"])]) == []
    manifest(run)
    assert verify("results/run") == []
    written = json.loads(Path("results/run/manifest.json").read_text())
    assert f"results/run/tables/.layers.csv.icet-link.json" in written["files"]["links"]
    link = json.loads(link_path(run["scores"]).read_text())
    assert link["rule"] == "score_testset" and str(run["index"]) in link["inputs"]
    assert link["machine"]["cpu_count"] >= 1 and "ATEN_CPU_CAPABILITY" in link["machine"]["environment"]


def cut(path, keep):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep]))


def test_a_shard_cut_at_a_line_boundary_stops_the_scorer_the_next_job_and_the_manifest(run):
    cut(run["shard"], 70)
    where = f"changed shard: {run['shard'].as_posix()} (index {run['index'].as_posix()}), 70 of 100 rows"
    with pytest.raises(IcetError) as err:
        expand([run["index"]])  # what score_responses and score_utility read shards through
    assert str(err.value).startswith(where) and "\n" not in str(err.value)
    with pytest.raises(IcetError, match="70 of 100 rows"):
        Job(snakemake("score_testset", [run["index"]], [run["scores"]]))
    with pytest.raises(IcetError, match="70 of 100 rows.*no manifest is written"):
        manifest(run)
    assert not Path("results/run/manifest.json").exists()


def test_a_tampered_score_file_stops_the_next_job_and_never_verifies(run):
    manifest(run)
    scores = run["scores"]
    scores.write_text(scores.read_text().replace('"unsafe": 1', '"unsafe": 0', 1))
    with pytest.raises(IcetError) as err:
        Job(snakemake("table_layers", [scores], [run["table"]]))
    assert str(err.value).startswith(f"{scores.as_posix()}: changed after rule score_testset "
                                     "wrote it") and "\n" not in str(err.value)
    problems = verify("results/run")
    assert any(p.startswith(f"{scores.as_posix()}: changed after rule score_testset") for p in problems)
    # a manifest rewritten over the tampered file (the laundering route) is refused, and the
    # table made from the old scores still says what it read
    with pytest.raises(IcetError, match="no manifest is written"):
        manifest(run)
    link = link_path(scores)
    record = json.loads(link.read_text())
    from icet.io import sha256_file

    record["outputs"][scores.as_posix()] = sha256_file(scores)  # a link forged to match
    link.write_text(json.dumps(record))
    assert any(p.startswith(f"changed input: {scores.as_posix()} changed after rule table_layers")
               for p in Chain(".").problems([str(run["table"])]))


def test_a_changed_image_fails_verify_and_the_next_scorer(run):
    manifest(run)
    image = Image.open(run["image"]).convert("RGB")
    image.putpixel((0, 0), (254, 0, 0))
    image.save(run["image"])
    problems = verify("results/run")
    assert any(p.startswith(f"changed image: {run['image'].as_posix()} (swept into "
                            f"{run['index'].as_posix()})") for p in problems), problems
    with pytest.raises(IcetError, match="changed image: resources/data/images/a.png"):
        expand([run["index"]])
    with pytest.raises(IcetError, match="no manifest is written"):
        manifest(run)


def test_verify_checks_the_downloads_against_their_records(run):
    model = Path("resources/models/m")
    model.mkdir(parents=True)
    (model / "w.bin").write_bytes(b"weights")
    from icet.io import sha256_file

    (model / ".icet-download.json").write_text(json.dumps(
        {"repo_id": "org/m", "revision": "a" * 40, "files": {"w.bin": sha256_file(model / "w.bin")}}))
    job = Job(snakemake("sweep_shard", [model], ["results/run/other.json"]))
    Path("results/run/other.json").write_text("{}")
    job.done()
    assert Chain(".").problems(["results/run/other.json"]) == []
    (model / "w.bin").write_bytes(b"weights, edited")
    assert Chain(".").problems(["results/run/other.json"]) == [
        "changed download file: resources/models/m/w.bin (sha256 differs from "
        "resources/models/m/.icet-download.json); download it again (snakemake --force "
        "resources/models/m) or restore it"]


ERRING_JOB = """
import sys
from types import SimpleNamespace
sys.path.insert(0, {src!r})
from icet.chain import Job
from icet.errors import IcetError
from icet.logs import setup_logging
job = Job(SimpleNamespace(rule="r", input=[], output=[], log=[{log!r}]))
{before}
raise {error}
"""


@pytest.mark.parametrize("before", ["", "setup_logging({log!r}, 'x').info('started')"])
def test_a_jobs_error_ends_its_log_in_one_line(tmp_path, before):
    """Snakemake sends a script's stderr to the console, not to the rule's log: the error
    must end the log (one line for bad input), whether or not logging was set up first."""
    log = tmp_path / "logs" / "job.log"
    code = ERRING_JOB.format(src=SRC, log=str(log), before=before.format(log=str(log)),
                             error="IcetError('data.jsonl: row 3 (x): prompt too long')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "icet: data.jsonl: row 3 (x): prompt too long"
    assert "Traceback" not in done.stderr
    assert log.read_text().splitlines()[-1] == "icet: data.jsonl: row 3 (x): prompt too long"


def test_a_bug_still_shows_its_traceback_in_the_log(tmp_path):
    log = tmp_path / "job.log"
    code = ERRING_JOB.format(src=SRC, log=str(log), before="", error="KeyError('oops')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Traceback" in done.stderr and "KeyError: 'oops'" in log.read_text()


def test_nested_download_records_are_checked_too(tmp_path, monkeypatch):
    """Detoxify's folder: a checkpoint fetched by URL and a config snapshot with its own record."""
    from icet.io import sha256_file

    monkeypatch.chdir(tmp_path)
    folder = Path("resources/judges/toxicity")
    (folder / "config").mkdir(parents=True)
    (folder / "checkpoint.ckpt").write_bytes(b"ckpt")
    (folder / "config" / "config.json").write_text("{}")
    (folder / "config" / ".icet-download.json").write_text(json.dumps(
        {"repo_id": "bert", "files": {"config.json": sha256_file(folder / "config" / "config.json")}}))
    (folder / ".icet-download.json").write_text(json.dumps(
        {"checkpoint": {"url": "https://x/c.ckpt", "path": "/tmp/abc.part/checkpoint.ckpt",
                        "sha256": sha256_file(folder / "checkpoint.ckpt")}}))
    assert Chain(".").problems([str(folder)]) == []
    (folder / "checkpoint.ckpt").write_bytes(b"other")
    (folder / "config" / "config.json").write_text('{"a": 1}')
    found = Chain(".").problems([str(folder)])
    assert [p.split(" (")[0] for p in found] == [
        "changed download file: resources/judges/toxicity/checkpoint.ckpt",
        "changed download file: resources/judges/toxicity/config/config.json"]
