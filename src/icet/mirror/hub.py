"""Write repositories into a Hugging Face Hub cache, the layout `snapshot_download` reads offline.

huggingface_hub's cache (docs "Manage huggingface_hub cache-system"; huggingface_hub
file_download / _snapshot_download): `<cache>/<type>s--<org>--<name>/` holds `blobs/<hash>`
(file contents), `snapshots/<commit>/<path>` (relative symlinks to the blobs) and
`refs/<revision>` (a file holding the commit sha a branch, tag or PR ref points to; a PR ref
`refs/pr/3` lives at `refs/refs/pr/3`). Offline, `snapshot_download(repo, revision=...)`
reads `refs/<revision>` and returns `snapshots/<commit>`, so a repo with several refs (main
with `.bin` weights, refs/pr/3 with safetensors) is several snapshot folders. A revision
that is a full commit sha is not looked up in refs/: `snapshots/<sha>` is read directly
(huggingface_hub's snapshot_download skips resolving a REGEX_COMMIT_HASH revision), so a
config pinned to a sha gets its snapshot under that name.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def repo_folder(cache: str | os.PathLike, repo_id: str, repo_type: str = "model") -> Path:
    """`<cache>/models--org--name` (or datasets--...), as huggingface_hub names it."""
    return Path(cache) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def _commit_of(repo_id: str, revision: str, hashes: dict[str, str]) -> str:
    """A 40-hex commit id that changes with the content (a stand-in for the Hub's git sha);
    a pinned sha names its own snapshot."""
    if _is_commit(revision):
        return revision
    text = repo_id + "@" + revision + "".join(f"\n{k} {v}" for k, v in sorted(hashes.items()))
    return hashlib.sha1(text.encode()).hexdigest()


def write_repo(cache: str | os.PathLike, repo_id: str, files: dict[str, Path], *,
               repo_type: str = "model", revision: str = "main") -> str:
    """Put `files` ({path in repo: local file}) into the cache as `revision`; return its commit."""
    folder = repo_folder(cache, repo_id, repo_type)
    hashes = {}
    for rel, src in files.items():
        digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        hashes[rel] = digest
        blob = folder / "blobs" / digest
        if not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, blob)
    commit = _commit_of(repo_id, revision, hashes)
    snapshot = folder / "snapshots" / commit
    for rel, digest in hashes.items():
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(folder / "blobs" / digest, link.parent))
    if not _is_commit(revision):
        ref = folder / "refs" / revision
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(commit)  # no newline, as huggingface_hub writes it
    return commit


def write_folder(cache: str | os.PathLike, repo_id: str, folder: str | os.PathLike, *,
                 repo_type: str = "model", revision: str = "main") -> str:
    """Every file under `folder` into the cache as `revision` of `repo_id`."""
    root = Path(folder)
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}
    return write_repo(cache, repo_id, files, repo_type=repo_type, revision=revision)


def snapshot_path(cache: str | os.PathLike, repo_id: str, repo_type: str = "model",
                  revision: str = "main") -> Path:
    """The snapshot folder `revision` points to (what an offline snapshot_download returns)."""
    folder = repo_folder(cache, repo_id, repo_type)
    if _is_commit(revision):
        return folder / "snapshots" / revision
    commit = (folder / "refs" / revision).read_text().strip()
    return folder / "snapshots" / commit
