"""Fetch pinned model/data snapshots from the Hugging Face Hub and plain files from URLs.

A download lands in a temporary folder beside its target and is renamed into place only
when every file is there, so an interrupted download never looks finished. Each snapshot
folder carries `.icet-download.json`: the requested revision, the commit it resolved to,
the patterns used and the sha256 and size of every file, so a result can name exactly which
weights made it, and every later job fingerprints the folder from that record instead of
hashing it again (icet.shards.fingerprint). URL downloads are recorded the same way (url, sha256, whether config pinned it; an
archive's record also hashes every unpacked file; a single file's record lies beside it as
`.<name>.icet-download.json`); icet.provenance copies every record into the run manifest.
The Hub token comes from `HF_TOKEN` in the environment only; it is never logged or
written (the log handlers redact it too, see icet.logs).

Offline (`HF_HUB_OFFLINE=1`), `huggingface_hub.snapshot_download` reads the Hub cache, so a
filled cache (`HF_HOME` / `HF_HUB_CACHE`) rebuilds the same folder without a network.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable

from icet.errors import IcetError
from icet.io import atomic_dir, atomic_path, sha256_file, sha256_tree, write_json
from icet.logs import progress, setup_logging

MANIFEST_NAME = ".icet-download.json"

# What a model folder needs to load with `from_pretrained`: weights as safetensors, configs,
# tokenizer files (json, sentencepiece `.model`, BPE `merges.txt`/`vocab.txt`, tiktoken) and
# chat templates. No `*.py`: we never run a repository's remote code.
MODEL_ALLOW_PATTERNS = ["*.safetensors", "*.json", "*.model", "*.txt", "*.tiktoken", "*.jinja"]

# Never fetched for models, even if a caller's patterns match them: pickled checkpoints can
# run code when loaded, and the other frameworks' weights only double the download.
MODEL_FORBIDDEN_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5"]

URL_CHUNK_BYTES = 1 << 20  # 1 MiB reads: large enough for speed, small enough for progress
URL_TIMEOUT_S = 60.0  # per socket operation, not the whole download

_COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# A release file named "<name>-<first 8+ hex digits of its sha256>.<ext>": torch.hub's
# convention (torch.hub.HASH_REGEX), which Detoxify's convert_weights.py follows.
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[^./]+$")


def url_record_path(out: str | os.PathLike) -> Path:
    """Where `download_url(record=True)` writes the record of a single downloaded file."""
    out = Path(out)
    return out.parent / f".{out.name}{MANIFEST_NAME}"


def expected_sha256_prefix(url: str) -> str | None:
    """The sha256 prefix a release file's name promises (see _HASH_IN_NAME), or None."""
    match = _HASH_IN_NAME.search(url.split("?")[0])
    return match.group(1) if match else None


def is_commit(revision: str) -> bool:
    """True for a full commit sha; a branch or tag name can move to other files later."""
    return bool(_COMMIT_SHA.fullmatch(revision or ""))


def default_allow_patterns(repo_type: str) -> list[str] | None:
    """Patterns fetched when the caller gives none: a loadable model, or a whole data set."""
    return list(MODEL_ALLOW_PATTERNS) if repo_type == "model" else None


def _offline() -> bool:
    """True if the environment asks for no network (read now, not at huggingface_hub import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or flag.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_cache_dir() -> str | None:
    """The Hub cache named by the environment now (None: huggingface_hub's own default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _redact(text: str) -> str:
    token = os.environ.get("HF_TOKEN")
    return text.replace(token, "***") if token else text


def _first_line(err: object) -> str:
    lines = str(err).strip().splitlines()
    return _redact(lines[0]) if lines else type(err).__name__


def _call_snapshot_download(repo_id: str, revision: str, repo_type: str,
                            allow_patterns: list[str] | None, ignore_patterns: list[str] | None,
                            cache_dir: str | None, offline: bool) -> str:
    """snapshot_download with hub errors turned into one-line IcetErrors."""
    import huggingface_hub
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    where = f"{repo_id}@{revision}"
    try:
        return huggingface_hub.snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            cache_dir=cache_dir,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            local_files_only=offline,
            token=os.environ.get("HF_TOKEN") or None,  # None: huggingface_hub's own login, if any
        )
    # GatedRepoError is a RepositoryNotFoundError, so it must be caught first.
    except GatedRepoError:
        raise IcetError(f"{repo_id}: gated; accept the license at https://huggingface.co/{repo_id} "
                        f"and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise IcetError(f"{where}: revision {revision!r} not found in {repo_type} repo "
                        f"{repo_id}") from None
    except RepositoryNotFoundError:
        raise IcetError(f"{where}: {repo_type} repo {repo_id!r} not found (or private without "
                        f"access; set HF_TOKEN), revision {revision!r}") from None
    except LocalEntryNotFoundError as err:
        # IncompleteSnapshotError is one of these: a cached snapshot that misses files.
        state = "has only part of" if type(err).__name__ == "IncompleteSnapshotError" else "lacks"
        mode = "offline (HF_HUB_OFFLINE=1)" if offline else "the Hub could not be reached"
        raise IcetError(f"{where}: {mode} and the Hub cache ({cache_dir or 'default'}) {state} "
                        f"{repo_id}@{revision}; run once with network to fill it") from None
    except HfHubHTTPError as err:
        raise IcetError(f"{where}: Hub error ({_first_line(err)})") from None


def _resolve_commit(snapshot: Path, repo_id: str, revision: str, repo_type: str, offline: bool,
                    logger) -> str | None:
    """The commit sha the revision resolved to: the cache's snapshot folder is named by it."""
    if _COMMIT_SHA.fullmatch(snapshot.name):
        return snapshot.name
    if _COMMIT_SHA.fullmatch(revision):
        return revision
    if not offline:
        from huggingface_hub import HfApi

        try:
            info = HfApi(token=os.environ.get("HF_TOKEN") or None).repo_info(
                repo_id, repo_type=repo_type, revision=revision)
            return info.sha
        except Exception as err:  # provenance is best effort here; the files are already local
            logger.warning("could not resolve %s@%s to a commit: %s", repo_id, revision,
                           _first_line(err))
    logger.warning("resolved commit of %s@%s unknown", repo_id, revision)
    return None


def _select_files(snapshot: Path, allow_patterns: list[str] | None,
                  ignore_patterns: list[str] | None) -> list[str]:
    """Files under the snapshot matching the patterns (an offline cache may hold more)."""
    from huggingface_hub.utils import filter_repo_objects

    every = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*")
                   if p.is_file() and not p.relative_to(snapshot).as_posix().startswith(".cache/"))
    return list(filter_repo_objects(every, allow_patterns=allow_patterns,
                                    ignore_patterns=ignore_patterns))


def _place_file(src: Path, dst: Path) -> str:
    """Hard-link the cache's blob into place (no second copy of the weights); copy if we cannot."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    blob = src.resolve()
    try:
        os.link(blob, dst)
        return "link"
    except OSError:
        shutil.copyfile(blob, dst)
        return "copy"


def download_snapshot(
    repo_id: str,
    revision: str,
    out_dir: str | os.PathLike,
    *,
    repo_type: str = "model",
    allow_patterns: Iterable[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    log: str | os.PathLike | None = None,
) -> dict:
    """Put `repo_id` at `revision` into `out_dir` (atomically) and return its manifest.

    `allow_patterns` defaults to MODEL_ALLOW_PATTERNS for models and everything for data
    sets; models never get MODEL_FORBIDDEN_PATTERNS. `cache_dir` defaults to the Hub cache
    named by HF_HUB_CACHE / HF_HOME.
    """
    logger = setup_logging(log, "download")
    if not revision:
        raise IcetError(f"{repo_id}: no revision given; pin a branch, tag or commit sha")
    patterns = (list(allow_patterns) if allow_patterns is not None
                else default_allow_patterns(repo_type))
    ignore = list(MODEL_FORBIDDEN_PATTERNS) if repo_type == "model" else None
    cache = str(cache_dir) if cache_dir is not None else _hub_cache_dir()
    offline = _offline()
    logger.info("snapshot %s %s@%s into %s (allow=%s, ignore=%s, offline=%s, token %s)",
                repo_type, repo_id, revision, out_dir, patterns, ignore, offline,
                "from HF_TOKEN" if os.environ.get("HF_TOKEN") else "not set")

    snapshot = Path(_call_snapshot_download(repo_id, revision, repo_type, patterns, ignore,
                                            cache, offline))
    commit = _resolve_commit(snapshot, repo_id, revision, repo_type, offline, logger)
    files = _select_files(snapshot, patterns, ignore)
    if not files:
        raise IcetError(f"{repo_id}@{revision}: no files match allow_patterns {patterns}")
    if allow_patterns is None and repo_type == "model" and not any(
            f.endswith(".safetensors") for f in files):
        # e.g. OpenAssistant/reward-model-deberta-v3-large-v2: `main` has only
        # pytorch_model.bin; its safetensors copy lives on the PR ref refs/pr/3.
        raise IcetError(f"{repo_id}@{revision}: no *.safetensors weights at this revision (we "
                        f"never fetch pickled *.bin/*.pt); pin a revision that has them, such "
                        f"as the Hub's safetensors-conversion PR ref refs/pr/N")

    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    placed = {"link": 0, "copy": 0}
    with atomic_dir(out_dir) as tmp:
        for rel in progress(files, desc=f"place {repo_id}", unit="file"):
            placed[_place_file(snapshot / rel, tmp / rel)] += 1
            hashes[rel] = sha256_file(tmp / rel)
            sizes[rel] = (tmp / rel).stat().st_size
        manifest = {
            "repo_id": repo_id,
            "repo_type": repo_type,
            "revision": revision,
            "resolved_sha": commit,
            "allow_patterns": patterns,
            "ignore_patterns": ignore,
            "files": hashes,
            # With the hashes, what lets a job trust them instead of re-hashing the folder
            # (icet.shards.fingerprint): a 7-11B model is 14-21 GB to read per job.
            "sizes": sizes,
        }
        write_json(tmp / MANIFEST_NAME, manifest)
    logger.info("%s@%s -> commit %s: %d files (%d hard-linked, %d copied) in %s", repo_id,
                revision, commit, len(files), placed["link"], placed["copy"], out_dir)
    return manifest


def download_url(
    url: str,
    out: str | os.PathLike,
    sha256: str | None = None,
    *,
    log: str | os.PathLike | None = None,
    record: bool = False,
    sha256_prefix: str | None = None,
) -> dict:
    """Fetch a plain file (COCO/VQA zips, AdvBench CSV) atomically; check its sha256 if given.

    Returns {url, path, sha256, bytes, sha256_pinned} (+ sha256_prefix_checked when
    `sha256_prefix` is given and matched); `record` also writes it to `url_record_path(out)`.
    No token is sent: these hosts need none, and an unrelated host must never see HF_TOKEN.
    """
    logger = setup_logging(log, "download")
    logger.info("fetch %s -> %s", url, out)
    digest = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "icet-download/1"})
    with atomic_path(out) as tmp:
        try:
            with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response, \
                    open(tmp, "wb") as f:
                total = response.headers.get("Content-Length") if response.headers else None
                bar = progress(total=int(total) if total else None, unit="B", unit_scale=True,
                               desc=Path(out).name)
                while block := response.read(URL_CHUNK_BYTES):
                    f.write(block)
                    digest.update(block)
                    size += len(block)
                    bar.update(len(block))
                bar.close()
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = _first_line(getattr(err, "reason", None) or err)
            raise IcetError(f"{url}: download failed ({reason})") from None
        got = digest.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise IcetError(f"{url}: sha256 mismatch (expected {sha256.lower()}, got {got}); "
                            f"{out} not written")
        if sha256_prefix is not None and not got.startswith(sha256_prefix.lower()):
            raise IcetError(f"{url}: sha256 {got} does not start with {sha256_prefix.lower()} "
                            f"(the hash in its file name); {out} not written")
    logger.info("%s: %d bytes, sha256 %s", out, size, got)
    info = {"url": url, "path": Path(out).name if record else str(out), "sha256": got,
            "bytes": size, "sha256_pinned": sha256 is not None}
    if sha256_prefix is not None:
        info["sha256_prefix_checked"] = sha256_prefix.lower()
    if record:
        write_json(url_record_path(out), info)
    return info


def download_archive(url: str, out_dir: str | os.PathLike, sha256: str | None = None, *,
                     log: str | os.PathLike | None = None) -> dict:
    """Fetch a zip archive and unpack it into `out_dir` atomically (COCO, VQA-v2)."""
    import tempfile
    import zipfile

    logger = setup_logging(log, "download")
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, tempfile.TemporaryDirectory(dir=out_dir.parent) as scratch:
        archive = Path(scratch) / Path(url).name
        record = download_url(url, archive, sha256, log=log)
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in zf.namelist():  # refuse paths that escape the folder
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise IcetError(f"{url}: unsafe path {member!r} in archive")
                zf.extractall(tmp)
        except zipfile.BadZipFile:
            raise IcetError(f"{url}: not a zip archive") from None
        record = {**record, "path": str(out_dir), "unpacked": True, "files": sha256_tree(tmp)}
        write_json(Path(tmp) / MANIFEST_NAME, record)
    logger.info("unpacked %s into %s", url, out_dir)
    return record


def download_detoxify(checkpoint_url: str, config_repo: str, revision: str,
                      out_dir: str | os.PathLike, *, log: str | os.PathLike | None = None) -> dict:
    """Detoxify's checkpoint and its BERT config/tokenizer as local files, so it runs offline.

    Layout (what icet.judges.toxicity.ToxicityJudge reads): out_dir/checkpoint.ckpt and
    out_dir/config/ (a config + tokenizer snapshot of `config_repo`). The checkpoint must
    match the sha256 prefix in its file name (e.g. toxic_original-c1212f89.ckpt), the only
    published hash of Detoxify's releases.
    """
    logger = setup_logging(log, "download")
    with atomic_dir(out_dir) as tmp:
        checkpoint = download_url(checkpoint_url, Path(tmp) / "checkpoint.ckpt", log=log,
                                  sha256_prefix=expected_sha256_prefix(checkpoint_url))
        config = download_snapshot(config_repo, revision, Path(tmp) / "config",
                                   allow_patterns=["config.json", "tokenizer*", "vocab*",
                                                   "special_tokens_map.json"], log=log)
        record = {"checkpoint": checkpoint, "config": config}
        write_json(Path(tmp) / ".icet-download.json", record)
    logger.info("Detoxify checkpoint and config in %s", out_dir)
    return record
