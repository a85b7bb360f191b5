"""Run manifest: hashes, versions, no secrets, and verify() naming changed/missing files."""

import hashlib
import importlib.metadata
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

import icet
from icet.errors import IcetError
from icet.provenance import PACKAGES, verify, write_manifest


SRC = str(Path(icet.__file__).parents[1])
SENTINEL = f"sentinel-{secrets.token_hex(16)}"  # an HF_TOKEN value never to be written


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fake repo root (cwd) with a model folder, a data file and a run folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "toy").mkdir(parents=True)
    (tmp_path / "models" / "toy" / "config.json").write_text('{"a": 1}')
    (tmp_path / "models" / "toy" / "weights.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cp.jsonl").write_text('{"id": "cp-0"}\n')
    (tmp_path / "results" / "run1").mkdir(parents=True)
    (tmp_path / "results" / "run1" / "table2.csv").write_text("a,b\n1,2\n")
    return tmp_path


def make_manifest(extra=None, config=None):
    return write_manifest("results/run1/manifest.json",
                          config=config or {"seed": 0, "layers": [0, 1]},
                          files={"models": ["models/toy"], "data": ["data/cp.jsonl"],
                                 "results": ["results/run1/table2.csv"]},
                          seeds={"global": 0, "bootstrap": 0}, extra=extra)


def test_manifest_lists_hashes_versions_and_git(repo):
    manifest = make_manifest(extra={"image_processor_backend": "pil", "judge": "toy-guard"})
    written = json.loads((repo / "results" / "run1" / "manifest.json").read_text())
    assert written == json.loads(json.dumps(manifest))
    assert written["files"]["models"] == {
        "models/toy/config.json": hashlib.sha256(b'{"a": 1}').hexdigest(),
        "models/toy/weights.bin": hashlib.sha256(b"\x00\x01\x02").hexdigest()}
    assert written["files"]["data"] == {
        "data/cp.jsonl": hashlib.sha256(b'{"id": "cp-0"}\n').hexdigest()}
    assert set(written["packages"]) == set(PACKAGES)
    assert written["packages"]["torch"] == importlib.metadata.version("torch")
    assert written["image_processor_backend"] == "pil"
    assert written["extra"] == {"judge": "toy-guard"}
    assert written["git"] == {"commit": "unknown", "dirty": "unknown"}  # tmp is no checkout
    assert written["seeds"] == {"global": 0, "bootstrap": 0}
    assert written["root"] == "../.."


def test_verify_clean_then_names_modified_and_missing_files(repo):
    make_manifest()
    assert verify("results/run1") == []
    (repo / "models" / "toy" / "weights.bin").write_bytes(b"\x00\x01\x03")
    (repo / "data" / "cp.jsonl").unlink()
    assert verify(repo / "results" / "run1" / "manifest.json") == [
        "missing: data/cp.jsonl (data)",
        "changed: models/toy/weights.bin (models)"]


def test_verify_works_from_another_directory(repo, monkeypatch):
    make_manifest()
    # a manifest may hash its own run folder: it leaves itself out and still verifies
    write_manifest("results/run1/manifest.json", config={}, files={"results": ["results/run1"]},
                   seeds={})
    assert verify("results/run1") == []
    monkeypatch.chdir(repo / "data")
    assert verify("../results/run1") == []


def test_hf_token_never_written(repo, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SENTINEL)
    make_manifest(config={"hf_token": SENTINEL, "note": f"token is {SENTINEL}",
                          "max_new_tokens": 16, "tokenizer": "toy",
                          "nested": [{"model": "toy", "url": f"https://x/{SENTINEL}"}]},
                  extra={"api_key": "k"})
    text = (repo / "results" / "run1" / "manifest.json").read_text()
    assert SENTINEL not in text
    written = json.loads(text)
    assert written["config"]["hf_token"] == "***" and written["config"]["note"] == "token is ***"
    assert written["extra"]["api_key"] == "***"
    assert written["config"]["max_new_tokens"] == 16 and written["config"]["tokenizer"] == "toy"
    assert written["packages"]["tokenizers"] not in (None, "***")


def test_manifest_missing_input_and_bad_manifest(repo):
    with pytest.raises(IcetError, match="'models'.*nowhere"):
        write_manifest("results/run1/manifest.json", config={}, files={"models": ["nowhere"]},
                       seeds={})
    (repo / "results" / "run1" / "manifest.json").write_text("{}")
    with pytest.raises(IcetError, match="not a manifest"):
        verify("results/run1")


def test_manifest_states_each_models_prompting(repo):
    """System prompt and image preprocessing shift refusal rates: stated per model, with the
    schema's defaults where the config leaves them out."""
    config = {"seed": 0, "models": [
        {"name": "llava-1.5-7b", "system_prompt": "A chat.", "image_preprocessing": "pad"},
        {"name": "toy-llava"}]}
    written = make_manifest(config=config)
    assert written["prompting"] == {
        "llava-1.5-7b": {"system_prompt": "A chat.", "image_preprocessing": "pad"},
        "toy-llava": {"system_prompt": None, "image_preprocessing": "processor"}}


def test_manifest_states_how_each_reward_judge_reads_a_pair(repo):
    """TR's absolute values shift with the input format: the manifest says which one."""
    config = {"seed": 0, "judges": {"reward": {"input_format": "hh-pair"},
                                    "utility_reward": {"input_format": "pair"},
                                    "guard": {"batch_size": 8}}}
    written = make_manifest(config=config)
    assert sorted(written["judge_inputs"]) == ["reward", "utility_reward"]
    assert written["judge_inputs"]["reward"]["input_format"] == "hh-pair"
    assert "Human: {prompt} " in written["judge_inputs"]["reward"]["form"]
    assert written["judge_inputs"]["utility_reward"]["form"] == "text pair: tokenizer(prompt, response)"


def test_manifest_records_every_download_and_warns_on_branches(repo):
    """The .icet-download.json records (dot-files, so not in `files`) go into the manifest's
    `downloads`: repo, requested revision, resolved sha, file hashes."""
    files = {name: hashlib.sha256((repo / "models" / "toy" / name).read_bytes()).hexdigest()
             for name in ("config.json", "weights.bin")}  # verify checks the files against them
    snapshot = {"repo_id": "org/m", "repo_type": "model", "revision": "main",
                "resolved_sha": "a" * 40, "files": files}
    (repo / "models" / "toy" / ".icet-download.json").write_text(json.dumps(snapshot))
    (repo / "raw").mkdir()
    (repo / "raw" / "h.csv").write_text("goal,target\n")
    url_record = {"url": "https://x/h.csv", "path": "h.csv", "sha256": "c" * 64, "bytes": 12,
                  "sha256_pinned": False}
    (repo / "raw" / ".h.csv.icet-download.json").write_text(json.dumps(url_record))
    pinned = {**snapshot, "repo_id": "org/pinned", "revision": "d" * 40, "resolved_sha": "d" * 40}
    (repo / "data" / "x").mkdir()
    (repo / "data" / "x" / ".icet-download.json").write_text(json.dumps(pinned))
    manifest = write_manifest("results/run1/manifest.json", config={}, seeds={},
                              files={"models": ["models/toy"]},
                              downloads=["models/toy", "raw/h.csv", "data/x", "raw/absent"])
    assert manifest["downloads"] == {"models/toy": snapshot, "raw/h.csv": url_record,
                                     "data/x": pinned}
    warnings = manifest["download_warnings"]
    assert len(warnings) == 2
    assert "org/m: revision 'main' is a branch or tag, not a commit" in warnings[0]
    assert "a" * 40 in warnings[0]
    assert "https://x/h.csv: no sha256 pinned" in warnings[1] and "c" * 64 in warnings[1]
    assert verify("results/run1") == []
    # back to the download: a downloaded file changed since is named by verify
    (repo / "models" / "toy" / "weights.bin").write_bytes(b"other weights")
    assert any(p.startswith("changed download file: models/toy/weights.bin (sha256 differs from "
                            "models/toy/.icet-download.json)") for p in verify("results/run1"))


def test_verify_rechecks_index_shard_hashes_and_names_unlisted_files(repo):
    """An index records its shards' sha256 (icet.shards): verify re-checks them, and names
    any file in the run folder the manifest does not list."""
    from icet.provenance import unlisted
    from icet.shards import mark_done, shard_path, write_index

    sweep = repo / "results" / "run1" / "sweep"
    sweep.mkdir()
    for layer in (0, 1):
        shard_path(sweep, layer).write_text(f'{{"layer": {layer}}}\n')
        mark_done(sweep, layer, "key")
    write_index(sweep / "chunk-00.json", sweep, [0, 1])
    write_manifest("results/run1/manifest.json", config={},
                   files={"responses": ["results/run1/sweep/chunk-00.json"],
                          "results": ["results/run1/table2.csv"]}, seeds={})
    assert verify("results/run1") == []

    (sweep / "layer-01.jsonl").write_text('{"layer": 1, "edited": true}\n')
    (sweep / "layer-00.jsonl").unlink()
    (repo / "results" / "run1" / "late.csv").write_text("added after the manifest\n")
    (repo / "results" / "run1" / ".late.csv.abcd1234.part").write_text("hidden: not a result")
    problems = verify("results/run1")
    assert "missing shard: results/run1/sweep/layer-00.jsonl (index " \
           "results/run1/sweep/chunk-00.json)" in problems
    assert any(p.startswith("changed shard: results/run1/sweep/layer-01.jsonl (index "
                            "results/run1/sweep/chunk-00.json)") for p in problems)
    # a file added later is listed (an HTML report may be), but is no mismatch
    assert not [p for p in problems if "late.csv" in p or ".part" in p]
    assert unlisted("results/run1") == ["results/run1/late.csv"]
    cli = subprocess.run([sys.executable, "-m", "icet", "verify", "results/run1"],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC})
    assert cli.returncode == 1
    assert "not in manifest: results/run1/late.csv" in cli.stdout.splitlines()
    assert any(line.startswith("changed shard: results/run1/sweep/layer-01.jsonl (index "
                               "results/run1/sweep/chunk-00.json)") for line in cli.stdout.splitlines())


def test_manifest_records_the_cpu_and_its_kernel_path(repo, monkeypatch):
    """Numbers differ by CPU kernel path: the manifest names the CPU, torch's capability and
    the settings that force one (never any other environment variable)."""
    import torch

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cpu = make_manifest()["cpu"]
    assert cpu["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["environment"]["ATEN_CPU_CAPABILITY"] == "default"
    assert cpu["environment"]["OMP_NUM_THREADS"] == "1"
    assert set(cpu["environment"]) == {"ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR",
                                       "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS",
                                       "MKL_NUM_THREADS"}
    assert cpu["cpu_count"] >= 1 and "cpu" in cpu
