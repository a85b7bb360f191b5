"""download.py against a fake hub layer and a real, hand-made Hub cache (no network)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

import pytest


import huggingface_hub  # noqa: E402
from huggingface_hub import constants as hub_constants  # noqa: E402
from huggingface_hub import errors as hub_errors  # noqa: E402

from icet import download  # noqa: E402
from icet.errors import IcetError  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"
TOKEN = f"sentinel-{secrets.token_hex(16)}"  # an HF_TOKEN value that must leak nowhere
REPO = "org/tiny-model"
FILES = {
    "config.json": b'{"model_type": "llava"}\n',
    "model.safetensors": b"weights-bytes",
    "tokenizer.json": b"{}\n",
    "chat_template.jinja": b"{{ messages }}",
    "pytorch_model.bin": b"pickled-weights",
    "flax_model.msgpack": b"flax",
}


def _hub_response(status: int):
    import httpx2

    return httpx2.Response(status, request=httpx2.Request("GET", f"https://huggingface.co/{REPO}"))


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: a cache folder and a record of calls."""

    def __init__(self, cache: Path, fail: BaseException | None = None):
        self.cache, self.fail, self.calls = cache, fail, []

    def __call__(self, repo_id, **kwargs):
        self.calls.append(kwargs)
        from huggingface_hub.utils import filter_repo_objects

        snap = self.cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / SHA
        wanted = list(filter_repo_objects(FILES, allow_patterns=kwargs.get("allow_patterns"),
                                          ignore_patterns=kwargs.get("ignore_patterns")))
        for i, name in enumerate(wanted):
            if self.fail is not None and i == 2:
                raise self.fail
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            (snap / name).write_bytes(FILES[name])
        return str(snap)


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path


def _every_file_text(root: Path) -> str:
    return "".join(p.read_bytes().decode("utf-8", "replace") for p in root.rglob("*") if p.is_file())


def test_snapshot_files_manifest_and_no_pickles(env, monkeypatch):
    hub = FakeHub(env / "hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    out = env / "models" / "tiny"
    manifest = download.download_snapshot(REPO, "main", out, log=env / "log.txt")

    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == [".icet-download.json", "chat_template.jinja", "config.json",
                     "model.safetensors", "tokenizer.json"]
    call = hub.calls[0]
    assert call["revision"] == "main" and call["token"] == TOKEN
    assert "*.bin" in call["ignore_patterns"] and not any(".bin" in p for p in call["allow_patterns"])
    on_disk = json.loads((out / ".icet-download.json").read_text())
    assert on_disk == manifest
    assert manifest["resolved_sha"] == SHA and manifest["revision"] == "main"
    assert manifest["files"]["model.safetensors"] == hashlib.sha256(b"weights-bytes").hexdigest()


def test_token_never_written_or_logged(env, monkeypatch, capfd):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub"))
    out = env / "out"
    download.download_snapshot(REPO, "main", out, log=env / "log.txt")
    assert TOKEN not in _every_file_text(out)
    assert TOKEN not in (env / "log.txt").read_text()
    captured = capfd.readouterr()
    assert TOKEN not in captured.err + captured.out


def test_interrupted_download_leaves_no_out_dir_and_rerun_completes(env, monkeypatch):
    out = env / "out"
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        FakeHub(env / "hub", fail=KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        download.download_snapshot(REPO, "main", out)
    assert not out.exists()

    # Interrupted while placing files into the temporary folder: still nothing at out_dir.
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub"))
    real_place, placed = download._place_file, []

    def place_then_stop(src, dst):
        if placed:
            raise KeyboardInterrupt
        placed.append(dst)
        return real_place(src, dst)

    monkeypatch.setattr(download, "_place_file", place_then_stop)
    with pytest.raises(KeyboardInterrupt):
        download.download_snapshot(REPO, "main", out)
    assert not out.exists()
    assert [p.name for p in env.iterdir() if p.name.startswith(".out")] == []

    monkeypatch.setattr(download, "_place_file", real_place)
    manifest = download.download_snapshot(REPO, "main", out)
    assert (out / "model.safetensors").read_bytes() == b"weights-bytes"
    assert len(manifest["files"]) == 4


def test_gated_repo_one_line_message(env, monkeypatch):
    gated = hub_errors.GatedRepoError("401 gated", response=_hub_response(401))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub", fail=gated))
    with pytest.raises(IcetError) as err:
        download.download_snapshot(REPO, "main", env / "out")
    assert str(err.value) == (f"{REPO}: gated; accept the license at "
                              f"https://huggingface.co/{REPO} and set HF_TOKEN")
    assert not (env / "out").exists()


@pytest.mark.parametrize("error_cls", ["RepositoryNotFoundError", "RevisionNotFoundError"])
def test_missing_repo_or_revision_names_both(env, monkeypatch, error_cls):
    err_obj = getattr(hub_errors, error_cls)("404", response=_hub_response(404))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub", fail=err_obj))
    with pytest.raises(IcetError) as err:
        download.download_snapshot(REPO, "v9.9", env / "out")
    message = str(err.value)
    assert REPO in message and "v9.9" in message and "\n" not in message


def _fill_hub_cache(cache: Path, revision_ref: str = "main") -> Path:
    """A Hub cache laid out as huggingface_hub writes it: blobs, symlinked snapshot, refs."""
    repo = cache / f"models--{REPO.replace('/', '--')}"
    snap = repo / "snapshots" / SHA
    for name, data in FILES.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snap / name).parent), snap / name)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision_ref).write_text(SHA)
    return repo


def test_offline_with_real_hub_cache_uses_real_snapshot_download(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _fill_hub_cache(env / "hub")
    out = env / "out"
    manifest = download.download_snapshot(REPO, "main", out)
    assert manifest["resolved_sha"] == SHA
    assert sorted(manifest["files"]) == ["chat_template.jinja", "config.json",
                                         "model.safetensors", "tokenizer.json"]
    assert (out / "config.json").read_bytes() == FILES["config.json"]
    assert not (out / "config.json").is_symlink()  # a real file, not a link into the cache


def test_offline_with_empty_cache_says_cache_lacks_repo(env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (env / "hub").mkdir()
    with pytest.raises(IcetError) as err:
        download.download_snapshot(REPO, "main", env / "out")
    assert f"lacks {REPO}@main" in str(err.value)
    assert not (env / "out").exists()


def test_download_url_atomic_with_checksum(env):
    src = env / "advbench.csv"
    src.write_bytes(b"goal,target\na,b\n")
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    out = env / "raw" / "advbench.csv"
    info = download.download_url(src.as_uri(), out, sha256=good)
    assert out.read_bytes() == src.read_bytes() and info["sha256"] == good and info["bytes"] == 16

    bad_out = env / "raw" / "bad.csv"
    with pytest.raises(IcetError, match="sha256 mismatch"):
        download.download_url(src.as_uri(), bad_out, sha256="0" * 64)
    assert not bad_out.exists()
    assert [p.name for p in (env / "raw").iterdir()] == ["advbench.csv"]

    with pytest.raises(IcetError, match="download failed"):
        download.download_url((env / "missing.csv").as_uri(), env / "raw" / "m.csv")


def test_url_and_archive_downloads_leave_a_record_with_hashes(env):
    """URL downloads are recorded like snapshots: url, sha256, whether it was
    pinned, and for archives the unpacked files' hashes."""
    import zipfile

    src = env / "advbench.csv"
    src.write_bytes(b"goal,target\na,b\n")
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    out = env / "raw" / "advbench" / "harmful_behaviors.csv"
    info = download.download_url(src.as_uri(), out, sha256=good, record=True)
    record = json.loads(download.url_record_path(out).read_text())
    assert download.url_record_path(out).name == ".harmful_behaviors.csv.icet-download.json"
    assert record == info == {"url": src.as_uri(), "path": "harmful_behaviors.csv",
                              "sha256": good, "bytes": 16, "sha256_pinned": True}
    archive = env / "coco.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("val/COCO_val2014_000000000001.jpg", b"jpeg-bytes")
    zipped = hashlib.sha256(archive.read_bytes()).hexdigest()
    info = download.download_archive(archive.as_uri(), env / "raw" / "coco")
    record = json.loads((env / "raw" / "coco" / ".icet-download.json").read_text())
    assert record == info
    assert record["sha256"] == zipped and record["sha256_pinned"] is False
    assert record["path"] == str(env / "raw" / "coco")
    assert record["files"] == {"val/COCO_val2014_000000000001.jpg":
                               hashlib.sha256(b"jpeg-bytes").hexdigest()}
    with pytest.raises(IcetError, match="sha256 mismatch"):
        download.download_archive(archive.as_uri(), env / "raw" / "coco2", sha256="0" * 64)
    assert not (env / "raw" / "coco2").exists()


def test_detoxify_checkpoint_checked_against_the_hash_prefix_in_its_name(env, monkeypatch):
    """Detoxify's release names end in the first 8 hex digits of the file's sha256
    (convert_weights.py); a download that does not match stops."""
    body = b"checkpoint-bytes"
    digest = hashlib.sha256(body).hexdigest()
    good = env / f"toxic_original-{digest[:8]}.ckpt"
    good.write_bytes(body)
    bad = env / "toxic_original-00000000.ckpt"
    bad.write_bytes(body)
    assert download.expected_sha256_prefix(good.as_uri()) == digest[:8]
    assert download.expected_sha256_prefix("https://x/plain.ckpt") is None
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub"))
    record = download.download_detoxify(good.as_uri(), REPO, "main", env / "tox")
    assert record["checkpoint"]["sha256_prefix_checked"] == digest[:8]
    with pytest.raises(IcetError, match="sha256 .* does not start with 00000000"):
        download.download_detoxify(bad.as_uri(), REPO, "main", env / "tox2")
    assert not (env / "tox2").exists()


def test_config_pins_url_downloads_to_a_commit_and_a_sha256():
    """AdvBench came from a moving branch and COCO over plain http, both unchecked."""
    import re

    from icet.config import load_config

    config = load_config(str(Path(__file__).resolve().parents[2] / "config.yaml"))
    advbench = config["data"]["advbench"]
    assert re.search(r"/llm-attacks/llm-attacks/[0-9a-f]{40}/data/advbench/", advbench["url"])
    assert re.fullmatch(r"[0-9a-f]{64}", advbench["sha256"] or "")
    assert re.fullmatch(r"[0-9a-f]{64}", config["data"]["coco"].get("sha256") or "")


def test_a_downloaded_folder_is_hashed_once_then_fingerprinted_from_its_record(env, monkeypatch):
    """Every sweep job fingerprints its model folder (14-21 GB on a cluster): from the sha256
    its download recorded, the same key as hashing every file, with only the small record
    read; a folder changed since (a file added, removed or resized) is hashed again."""
    from icet import shards

    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeHub(env / "hub"))
    out = env / "models" / "tiny"
    manifest = download.download_snapshot(REPO, "main", out)
    assert manifest["sizes"]["model.safetensors"] == len(b"weights-bytes")
    hashed = []
    real = shards.sha256_file
    monkeypatch.setattr(shards, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    key = shards.fingerprint({"a": 1}, [out])
    assert hashed == [".icet-download.json"]
    monkeypatch.setattr(shards, "recorded_hashes", lambda root, paths: {})  # the old way
    assert shards.fingerprint({"a": 1}, [out]) == key
    monkeypatch.undo()
    (out / "config.json").write_text('{"model_type": "llava", "edited": true}')  # new size
    assert shards.fingerprint({"a": 1}, [out]) != key
    (out / "config.json").unlink()
    assert shards.recorded_hashes(out, sorted(p for p in out.rglob("*") if p.is_file())) == {}
