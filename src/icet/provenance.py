"""A run manifest: what code, config, libraries and seeds made which files, and their hashes.

Paths are stored relative to the repository root (the working directory when the manifest
is written) and the manifest records where that root is relative to itself, so `verify`
works from any directory in a fresh clone. Of the environment only the settings that pick
CPU kernels and thread counts are recorded (icet.machine), and any secret that leaks in
through the config is replaced by "***" before writing.

The manifest is written only over an unbroken chain (icet.chain): every file it hashes must
still be what its job wrote, from what that job read, back to the downloads; `verify` walks
the same chain again, so a file changed and a manifest rewritten after it still fail.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from icet.errors import IcetError
from icet.io import read_json, sha256_file, tree_files, write_json
from icet.logs import setup_logging

MANIFEST_NAME = "manifest.json"  # looked up inside a run folder by `verify`
PACKAGES = ("torch", "transformers", "tokenizers", "peft", "accelerate", "detoxify",
            "snakemake", "numpy", "pandas")  # everything that can change our numbers
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")  # values that must never be written
# config keys whose string values are credentials: hf_token, api_key, but not max_new_tokens
SECRET_KEY = re.compile(r"(^|[_.-])(token|secret|password|passwd|api[_-]?key)($|[_.-])",
                        re.IGNORECASE)
REDACTED = "***"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state(root: str | os.PathLike = ".") -> dict[str, Any]:
    """Commit hash and dirty flag; "unknown" when not a checkout (or no commit yet)."""
    root = Path(root)
    commit = _git(root, "rev-parse", "--verify", "HEAD")
    status = _git(root, "status", "--porcelain")
    return {"commit": commit.strip() if commit else "unknown",
            "dirty": bool(status.strip()) if status is not None else "unknown"}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when absent), via importlib.metadata."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _redact(obj: Any, secrets: list[str]) -> Any:
    """Replace secret env values anywhere in strings, and values under secret-looking keys."""
    if isinstance(obj, dict):
        return {k: REDACTED if SECRET_KEY.search(str(k)) and isinstance(v, str) and v
                else _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for secret in secrets:
            obj = obj.replace(secret, REDACTED)
    return obj


def _relative(path: Path, root: Path) -> str:
    return Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()


def hash_files(files: dict[str, list[str]], root: Path,
                skip: Path | None = None, digest=sha256_file) -> dict[str, dict[str, str]]:
    """{group: {path relative to root: sha256}}; folders are hashed file by file.

    `skip` (the manifest itself, when it lies in a hashed folder) is left out: it is
    rewritten after hashing, so its old hash would always fail `verify`. `digest` hashes a
    file (the chain's cached sha256: the chain walk has read most of these already).
    """
    skipped = _relative(skip, root) if skip is not None else None
    hashed: dict[str, dict[str, str]] = {}
    for group, paths in files.items():
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        entries: dict[str, str] = {}
        for raw in paths:
            path = Path(raw)
            if path.is_file():
                if _relative(path, root) != skipped:
                    entries[_relative(path, root)] = digest(path)
            elif path.is_dir():
                base = _relative(path, root)
                for file in tree_files(path):
                    inner = (Path(base) / file.relative_to(path)).as_posix()
                    if inner != skipped:
                        entries[inner] = digest(file)
            else:
                raise IcetError(f"manifest: files group '{group}': {raw} not found")
        hashed[group] = dict(sorted(entries.items()))
    return hashed


def _data_builds(paths: list[str], root: Path) -> dict[str, dict]:
    from icet.datasets import build_choices

    return {_relative(Path(p), root): build_choices(p) for p in sorted(paths)}


def prompting_record(config: dict) -> dict[str, dict]:
    """Per model, the system prompt and image preprocessing its prompts got: choices that
    shift refusal rates, so the manifest states them outside the config dump too."""
    from icet.config import prompting_of

    return {m["name"]: prompting_of(m) for m in config.get("models", []) if "name" in m}


def judge_input_records(judges: dict) -> dict[str, dict]:
    """How each reward-model judge reads a (prompt, response) pair (icet.judges.reward)."""
    from icet.judges.reward import judge_input_records as records

    return records(judges)


def download_records(paths: list[str], root: str | os.PathLike = ".") -> dict[str, dict]:
    """{download path relative to root: its record} for the downloads at `paths`.

    A folder's records are its `.icet-download.json` files (nested ones too: Detoxify's config
    snapshot); a file's is its `.<name>.icet-download.json` beside it (icet.download). They
    are dot-files, which the `files` hashes skip, so they are collected here. A path that does
    not exist is skipped: the run did not need that download.
    """
    from icet.download import MANIFEST_NAME as RECORD, url_record_path

    root = Path(root)
    records: dict[str, dict] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_file() and url_record_path(path).is_file():
            records[_relative(path, root)] = read_json(url_record_path(path))
        elif path.is_dir():
            for found in sorted(path.rglob(RECORD)):
                records[_relative(found.parent, root)] = read_json(found)
    return records


def _download_entries(record: Any):
    """Every snapshot or URL record inside a record (Detoxify's nests both)."""
    if isinstance(record, dict):
        if "repo_id" in record or "url" in record:
            yield record
        for value in record.values():
            if isinstance(value, dict):
                yield from _download_entries(value)


def download_warnings(records: dict[str, dict]) -> list[str]:
    """One line per download a rerun may not reproduce: a Hub revision that is a branch or
    tag (it can move), a URL download without a sha256 pinned in config."""
    from icet.download import is_commit

    lines: list[str] = []
    for record in records.values():
        for entry in _download_entries(record):
            if "repo_id" in entry and not is_commit(entry.get("revision", "")):
                line = (f"{entry['repo_id']}: revision {entry.get('revision')!r} is a branch or "
                        f"tag, not a commit; this run used commit {entry.get('resolved_sha')} "
                        f"(pin it as the revision to rerun on the same files)")
            elif "url" in entry and not entry.get("sha256_pinned"):
                checked = entry.get("sha256_prefix_checked")
                line = (f"{entry['url']}: no sha256 pinned in config"
                        + (f" (only the prefix {checked} in its file name checked)" if checked else "")
                        + f"; this run got sha256 {entry.get('sha256')}")
            else:
                continue
            if line not in lines:
                lines.append(line)
    return lines


def write_manifest(out: str | os.PathLike, *, config: dict, files: dict[str, list[str]],
                   seeds: dict, extra: dict | None = None, downloads: list[str] | None = None,
                   data_builds: list[str] | None = None, tuning: dict | None = None,
                   log: str | os.PathLike | None = None) -> dict:
    """Write the run manifest JSON to `out` (a file, or a folder -> folder/manifest.json).

    `files` groups paths ("models", "data", "results"); `extra` holds anything else worth
    recording, e.g. {"image_processor_backend": "pil"}; `downloads` are the download folders
    and files whose records (`download_records`) go under "downloads". `data_builds` are the paper data
    sets' build.json files: their choices and counts (RT's image source, MR's rows used of
    280, VQA's question pool) are recorded under "data_builds". `tuning`: the config's speed
    and memory keys (schema x-tuning), which the rule keeps out of `config` so that changing
    one reruns nothing; recorded as they were when the manifest was written. Returns the
    manifest written.
    """
    from icet.chain import Chain
    from icet.machine import machine

    logger = setup_logging(log, "provenance")
    out = Path(out)
    if out.is_dir():
        out = out / MANIFEST_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    root = Path.cwd()
    roots = sorted({_relative(Path(p), root) for paths in files.values()
                    for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)})
    chain = Chain(root)
    broken = chain.problems(roots)
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise IcetError(f"{broken[0]}{more}; no manifest is written over a broken chain")
    secrets = sorted({os.environ[v] for v in SECRET_VARS if os.environ.get(v)}, key=len,
                     reverse=True)
    # only caller-supplied sections can carry a secret; hashes and versions are ours
    config, seeds, extra, tuning = _redact([config, seeds, dict(extra or {}), dict(tuning or {})],
                                           secrets)
    manifest = {
        "git": git_state(root),
        "config": config,
        "tuning": tuning,  # speed and memory keys only: none changes a number
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        # CPU model, torch's CPU kernel path, the kernel-picking settings; each job's link
        # records its own (icet.chain), gathered under "job_machines"
        "cpu": machine(load_torch=True),
        "packages": package_versions(),
        "image_processor_backend": extra.pop("image_processor_backend", None),
        "seeds": seeds,
        "prompting": prompting_record(config),
        "judge_inputs": judge_input_records(config.get("judges", {})),
        "extra": extra,
        "data_builds": _data_builds(data_builds or [], root),
        # where the repo root (paths below are relative to it) lies, seen from the manifest
        "root": _relative(root, out.parent),
        "files": hash_files(files, root, skip=out, digest=chain.hasher.file),
        # what the chain walk starts from (files and folders as the rule named them)
        "roots": roots,
    }
    # the links of the chain: a link edited or removed later is a changed or missing file
    manifest["files"]["links"] = dict(sorted(chain.links.items()))
    manifest["job_machines"] = job_machines(chain.links, root)
    # Everything else in the manifest's own folder (the run's results: L-PPO checkpoints,
    # value head, ...) is hashed too, so `verify` can name any file added there later.
    listed = {path for entries in manifest["files"].values() for path in entries}
    other = {rel: chain.hasher.file(root / rel) for rel in _folder_files(out.parent, root, skip=out)
             if rel not in listed}
    if other:
        manifest["files"]["other"] = dict(sorted(other.items()))
    records = download_records(list(downloads or []), root)
    manifest["downloads"] = records
    manifest["download_warnings"] = download_warnings(records)
    for line in manifest["download_warnings"]:
        logger.warning("provenance: %s", line)
    write_json(out, manifest)
    count = sum(len(v) for v in manifest["files"].values())
    logger.info("manifest: %d files hashed in %d groups -> %s", count, len(files), out)
    return manifest


def _folder_files(folder: Path, root: Path, skip: Path) -> list[str]:
    """Files under `folder`, relative to root; hidden ones (.part, .snakemake...) left out."""
    found = []
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if path.is_file() and not any(p.startswith(".") for p in parts) and path != skip:
            found.append(_relative(path, root))
    return found


def _load_manifest(run_dir_or_manifest: str | os.PathLike) -> tuple[Path, dict, Path]:
    """The manifest's path, its content, and the repository root its paths are relative to."""
    path = Path(run_dir_or_manifest)
    if path.is_dir():
        path = path / MANIFEST_NAME
    manifest = read_json(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise IcetError(f"{path}: not a manifest (no 'files' object)")
    return path, manifest, (path.parent / manifest.get("root", ".")).resolve()


def unlisted(run_dir_or_manifest: str | os.PathLike) -> list[str]:
    """Files in the manifest's folder that it does not list (hidden ones aside): added after
    the run (an HTML report, the organism study) or by hand. Listed, not a mismatch."""
    path, manifest, root = _load_manifest(run_dir_or_manifest)
    listed = {relative for entries in manifest["files"].values() for relative in entries}
    return [relative for relative in _folder_files(path.parent, root, skip=path)
            if relative not in listed]


def job_machines(links: dict[str, str], root: Path) -> list[dict]:
    """The distinct machines the run's jobs recorded in their links, each with its rules."""
    machines: dict[str, dict] = {}
    for link in sorted(links):
        try:
            data = json.loads((root / link).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        record = data.get("machine")
        if isinstance(record, dict):
            entry = machines.setdefault(json.dumps(record, sort_keys=True),
                                        {"machine": record, "rules": []})
            if data.get("rule") not in entry["rules"]:
                entry["rules"].append(data.get("rule"))
    return [{**m, "rules": sorted(map(str, m["rules"]))} for m in machines.values()]


def verify(run_dir_or_manifest: str | os.PathLike) -> list[str]:
    """Re-hash every file a manifest lists and walk the run's chain (icet.chain: every link's
    output and inputs, every sweep index's shards, data set and images, every download's
    files): one line per changed or missing file ([] = ok)."""
    from icet.chain import Chain

    path, manifest, root = _load_manifest(run_dir_or_manifest)
    chain = Chain(root)
    problems = []
    for group, entries in sorted(manifest["files"].items()):
        for relative, digest in sorted(entries.items()):
            target = root / relative
            if not target.is_file():
                problems.append(f"missing: {relative} ({group})")
            elif chain.hasher.file(target) != digest:
                problems.append(f"changed: {relative} ({group})")
    roots = manifest.get("roots") or sorted({relative for group, entries in manifest["files"].items()
                                             if group != "links" for relative in entries})
    problems += chain.problems(roots)
    return list(dict.fromkeys(problems))
