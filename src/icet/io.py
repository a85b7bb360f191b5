"""Atomic, durable file writing and row-checked reading.

Every output is written to a temporary `.part` file beside its target and renamed into
place, so an interrupted job never leaves a file that looks finished. Atomic also means
durable: the file (or every file of a folder) is fsynced before the rename and its folder
after it, so a node that loses power right after a job "finished" cannot come back with an
empty or half-written output under the final name. A folder replacing an older one is
swapped in with one exchange (renameat2 RENAME_EXCHANGE), so the target is never missing;
where the file system cannot exchange (NFS), the old folder waits under a `.part` name and
is put back if the swap fails. `.part` siblings a killed job left behind are swept when the
same target is next written.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from icet.errors import IcetError


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's content (a folder: its entries, i.e. renames) to disk."""
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> bool:
    """Linux syncfs(2): flush the whole file system holding `path` in one call; False where
    there is none. For a folder of many small files (the toy's images) it costs one flush
    where fsync per file costs one each (0.05 s against 1.5 s for 300 files here)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        if syncfs(fd) == 0:
            return True
    finally:
        os.close(fd)
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), str(path))  # a write-back error: not durable


def _sync_tree(root: Path) -> None:
    """Flush every file and folder under `root`: syncfs, else fsync each, bottom up."""
    if _syncfs(root):
        return
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                _fsync(Path(folder) / name)
        _fsync(Path(folder))


def _part_pattern(target: Path) -> re.Pattern:
    # tempfile's names: .<target>.<8 random chars>.part; an old folder set aside: .old.part
    return re.compile(rf"^\.{re.escape(target.name)}\.[a-z0-9_]{{8}}(\.old)?\.part$")


def sweep_parts(target: str | os.PathLike) -> list[Path]:
    """Remove the `.part` siblings of `target` a killed job left behind; return them.

    An old folder set aside by a swap that never finished (`.old.part`) is put back when
    `target` is missing, so an interruption there loses nothing.
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern = _part_pattern(target)
    stale = sorted(p for p in target.parent.iterdir() if pattern.match(p.name))
    for part in stale:
        if part.name.endswith(".old.part") and not os.path.lexists(target):
            os.replace(part, target)
        elif part.is_dir() and not part.is_symlink():
            shutil.rmtree(part, ignore_errors=True)
        else:
            part.unlink(missing_ok=True)
    return stale


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # kernel or file system (NFS, some FUSE) without exchange
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(new: Path, target: Path) -> None:
    """Put folder `new` at `target`; `target` (if any) ends up at `new`, for removal."""
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    if _exchange(new, target):
        return
    old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old.part"
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    os.replace(old, new)  # the caller removes `new`, as after an exchange


# How a full disk (or an exhausted quota) shows itself: an errno from Python's own writes,
# a message from the libraries that write through their own code (safetensors says
# "StorageFull"; torch's zip writer only "file write failed" or "unexpected pos", so any
# failed write counts when its folder is indeed nearly full).
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_MESSAGES = ("No space left on device", "Disk quota exceeded", "StorageFull")
NEARLY_FULL = 64 << 20  # bytes free below which a failed write is put down to a full disk


def disk_full(err: BaseException, folder: Path) -> bool:
    """Did writing into `folder` fail because its file system (or quota) is full?"""
    if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
        return True
    if any(message in str(err) for message in FULL_MESSAGES):
        return True
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def _full_disk_named(target: Path) -> Iterator[None]:
    """An error of the block that a full disk under `target`'s folder explains becomes one line
    naming `target`; any other error passes as it is."""
    try:
        yield
    except Exception as err:
        if not disk_full(err, target.parent):
            raise
        try:
            free = f"{shutil.disk_usage(target.parent).free / 2**20:.1f} MiB free there"
        except OSError:
            free = "free space unknown"
        said = (str(err).splitlines() or [""])[0][:160]
        raise IcetError(f"{target}: no space left on the device while writing it ({free}; "
                        f"{type(err).__name__}: {said}); nothing was replaced (an older "
                        "version, if any, is intact): free space and rerun") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_parts(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for sharing
    try:
        with _full_disk_named(target):
            yield tmp_path
            _fsync(tmp_path)
            os.replace(tmp_path, target)
            _fsync(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; swap it in for `path` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_parts(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        with _full_disk_named(target):
            yield tmp
            _sync_tree(tmp)
            if os.path.lexists(target) and not target.is_dir():
                target.unlink()  # a file (or link) where the folder goes: nothing to keep
            _swap_in(tmp, target)
            _fsync(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no NaN (written as null)."""
    return json.dumps(_nan_to_none(obj), sort_keys=True, ensure_ascii=False, default=_json_default)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(dumps(row) + "\n")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(_nan_to_none(obj), sort_keys=True, indent=2, ensure_ascii=False,
                           default=_json_default) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c) for c in columns})


def read_jsonl(path: str | os.PathLike, required: Iterable[str] = ()) -> list[dict]:
    """Read a JSONL file; a bad row stops with one line naming the file and row number."""
    path = Path(path)
    if not path.exists():
        raise IcetError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise IcetError(f"{path}: not UTF-8 (byte {err.start})") from None
    rows = []
    required = list(required)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise IcetError(f"{path}: row {number}: malformed JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise IcetError(f"{path}: row {number}: expected a JSON object")
        missing = [k for k in required if k not in row]
        if missing:
            raise IcetError(f"{path}: row {number}: missing key(s) {', '.join(missing)}")
        rows.append(row)
    return rows


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise IcetError(f"{path}: file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IcetError(f"{path}: unreadable JSON ({err})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under a folder, sorted, hidden ones (a name starting with ".": records,
    links, `.part` leftovers, Snakemake's timestamps) left out: a folder's content."""
    return [p for p in sorted(Path(folder).rglob("*")) if p.is_file() and not p.name.startswith(".")]


def sha256_tree(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under a folder (or of the file itself), keyed by relative path."""
    root = Path(path)
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {str(p.relative_to(root)): sha256_file(p) for p in tree_files(root)}
