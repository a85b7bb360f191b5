"""Resumable shards: one file per (model, variant, test set, layer), written atomically.

A sweep job covers several layers (loading a model costs more than one layer's
generation), but a killed job must lose at most the layer it was on. So each layer's
responses go to their own file, renamed into place when complete, with a sidecar
fingerprint of everything that determines its content (data, model, adapter, settings,
the library code that wrote it, torch/transformers versions, device and dtype). A rerun
keeps a shard whose fingerprint matches (same bytes, same mtime) and recomputes one whose
inputs changed. The job's declared output is an index listing the shards, their sha256
and row counts, and the data set and every image they were made from, written last: the
scorer (`expand`) and `icet verify` (`index_problems`) hold the shards to it, so a shard
cut or edited after the sweep, or an image changed under it, stops the next reader.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from icet.errors import IcetError
from icet.io import dumps, read_json, sha256_file, write_json

INDEX_NAME = "index.json"
# What an index's `inputs` hold, as problems name them.
INPUT_KINDS = {"data": "data set", "images": "image"}

# The library code a sweep shard's bytes depend on, relative to the icet package: the sweep
# loop, the fast engine, the model adapters and loader, seeding, and the JSONL writer. A
# change to any of these recomputes shards; a change elsewhere (report, judges) does not.
SWEEP_CODE = ("sweep.py", "engine.py", "shards.py", "io.py", "seeding.py", "runtime.py",
              "models")
PACKAGE_DIR = Path(__file__).resolve().parent


def code_hash(parts: Iterable[str] = SWEEP_CODE, root: str | os.PathLike | None = None) -> str:
    """sha256 over the source of `parts` (files or packages under `root`, default this
    package): the code's identity. The package version is a constant, so it cannot tell a
    fixed engine from the old one."""
    root = Path(root if root is not None else PACKAGE_DIR)
    digest = hashlib.sha256()
    for part in parts:
        path = root / part
        if not path.exists():
            raise FileNotFoundError(f"{path}: listed in the sweep code but missing")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).hexdigest().encode("ascii"))
    return digest.hexdigest()


def fingerprint(settings: dict[str, Any], files: Iterable[str | os.PathLike] = ()) -> str:
    """sha256 over settings (as sorted JSON) and the content of every input file or folder.

    A downloaded folder's files count by the sha256 its download recorded (`recorded_hashes`):
    hashed once per download, not by every job (a model folder is 14-21 GB)."""
    digest = hashlib.sha256(dumps(settings).encode("utf-8"))
    for path in sorted(str(p) for p in files if p):
        root = Path(path)
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        recorded = recorded_hashes(root, paths) if root.is_dir() else {}
        for p in paths:
            digest.update(str(p.relative_to(root) if p != root else p.name).encode("utf-8"))
            digest.update((recorded.get(p) or sha256_file(p)).encode("ascii"))
    return digest.hexdigest()


def recorded_hashes(root: Path, paths: list[Path]) -> dict[Path, str]:
    """The sha256 of `root`'s files as its download record lists them (icet.download), when
    the folder still holds exactly the recorded files at the recorded sizes; else none (every
    file is hashed). The record itself is always hashed: it is small."""
    from icet.download import MANIFEST_NAME

    try:
        record = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        files, sizes = dict(record["files"]), dict(record["sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    on_disk = {p.relative_to(root).as_posix(): p for p in paths if p != root / MANIFEST_NAME}
    if set(on_disk) != set(files) or set(files) != set(sizes):
        return {}
    if any(p.stat().st_size != sizes[rel] for rel, p in on_disk.items()):
        return {}
    return {p: str(files[rel]) for rel, p in on_disk.items()}


def shard_path(out_dir: str | os.PathLike, layer: int) -> Path:
    return Path(out_dir) / f"layer-{int(layer):02d}.jsonl"


def _meta_path(shard: Path) -> Path:
    return shard.with_suffix(".meta.json")


def is_done(out_dir: str | os.PathLike, layer: int, key: str) -> bool:
    """A shard counts as done when its file and its sidecar exist and the key matches."""
    shard = shard_path(out_dir, layer)
    meta = _meta_path(shard)
    if not (shard.exists() and meta.exists()):
        return False
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return recorded.get("fingerprint") == key and recorded.get("sha256") == sha256_file(shard)


def mark_done(out_dir: str | os.PathLike, layer: int, key: str) -> None:
    """Record the shard's fingerprint and hash (after the shard itself is in place)."""
    shard = shard_path(out_dir, layer)
    write_json(_meta_path(shard), {"fingerprint": key, "layer": int(layer),
                                   "sha256": sha256_file(shard)})


def _rows(path: Path) -> int:
    """Rows of a JSONL shard (blank lines do not count, as icet.io.read_jsonl reads it)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def write_index(index: str | os.PathLike, out_dir: str | os.PathLike, layers: Iterable[int],
                inputs: dict[str, dict[str, str]] | None = None) -> None:
    """The job's declared output: which shards it stands for, with their hashes and row
    counts, and `inputs` ({"data": {path: sha256}, "images": {path: sha256}}: what the
    shards were made from, paths as the job saw them)."""
    shards = {f"layer-{int(l):02d}": {"file": shard_path(out_dir, l).name,
                                      "sha256": sha256_file(shard_path(out_dir, l)),
                                      "rows": _rows(shard_path(out_dir, l))}
              for l in sorted(layers)}
    write_json(index, {"shards": shards, **({"inputs": inputs} if inputs else {})})


def index_shards(index: str | os.PathLike) -> list[Path]:
    """The shard files an index stands for (paths next to the index's folder)."""
    data = read_json(index)
    folder = Path(index).parent
    return [folder / entry["file"] for _, entry in sorted(data["shards"].items())]


def is_index(path: str | os.PathLike) -> bool:
    """A sweep index: a small JSON object with a `shards` object (what `write_index` writes)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file() or path.stat().st_size > (1 << 24):
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("shards"), dict)


def index_problems(index: str | os.PathLike, root: str | os.PathLike = ".",
                   digest=sha256_file) -> list[str]:
    """One line per way the files behind a sweep index differ from what it records: a shard
    missing, changed (sha256) or of another length, the data set or an image changed since
    the shards were made. Paths in the index resolve against `root` (the working directory
    the sweep ran in); `digest` hashes a file (a caller's cached sha256_file)."""
    index, root = Path(index), Path(root)
    where = f"(index {index.as_posix()})"
    data = json.loads((root / index).read_text(encoding="utf-8"))
    problems = []
    for name, entry in sorted(data["shards"].items()):
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)):
            problems.append(f"bad index entry: {name} {where}")
            continue
        shard = (index.parent / entry["file"]).as_posix()
        if not (root / shard).is_file():
            problems.append(f"missing shard: {shard} {where}")
        elif digest(root / shard) != entry.get("sha256"):
            rows, recorded = _rows(root / shard), entry.get("rows")
            count = f", {rows} of {recorded} rows" if recorded is not None and rows != recorded else ""
            problems.append(f"changed shard: {shard} {where}{count}: changed after the sweep "
                            "wrote it; rerun its sweep job (snakemake --forcerun sweep_shard)")
    for kind, files in sorted((data.get("inputs") or {}).items()):
        kind = INPUT_KINDS.get(kind, kind)
        for relative, recorded in sorted(files.items()):
            path = Path(relative) if Path(relative).is_absolute() else root / relative
            if not path.is_file():
                problems.append(f"missing {kind}: {relative} (swept into {index.as_posix()})")
            elif digest(path) != recorded:
                problems.append(f"changed {kind}: {relative} (swept into {index.as_posix()}): changed "
                                "since its shards were made; rerun the sweep (snakemake "
                                "--forcerun sweep_shard)")
    return problems


def expand(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Shard files behind a list of sweep outputs: an index stands for its shards, which
    must be what it records (`index_problems`: one line naming the first that is not)."""
    out: list[str] = []
    for path in paths:
        if str(path).endswith(".json"):
            problems = index_problems(path)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise IcetError(problems[0] + more)
            out.extend(str(p) for p in index_shards(path))
        else:
            out.append(str(path))
    return out
