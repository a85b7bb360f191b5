"""Chain of custody: every job records what its outputs were made from and checks its inputs.

Snakemake reruns a job when its inputs, params or code change, but a finished file edited in
place (a sweep shard cut short, a verdict flipped in a score file, an image changed under a
data set) would flow into the next tables and a rewritten manifest without a word. So each
rule's script runs its one library call inside a `Job` (workflow_scripts/):

    job = Job(snakemake)   # inputs checked against their links; an error ends the job's log
    score_responses(...)   # the one library call
    job.done()             # a link beside every output

A link records the sha256 of each output as written and of each input as read, the rule, and
the machine (icet.machine). It is a hidden sibling, `.<name>.icet-link.json` (as a URL
download's record is `.<name>.icet-download.json`), never a file inside an output folder,
whose fingerprints would then change. Two files say more than their link:

- a sweep index (icet.shards) records its shards (sha256, rows) and the data set and every
  image they were made from: images are no rule's declared input;
- a download records every file it fetched (`.icet-download.json`): a downloaded folder's
  digest is that record's (the download hashed each file once; a 14 GB model is not re-read
  by every job), and `Chain.problems` re-hashes the files against it.

`Chain.problems` walks the chain from a run's files to the downloads (`icet verify`, and the
manifest before it is written): each link's output and inputs, each index's shards, data set
and images, each download's files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from icet.errors import IcetError
from icet.io import dumps, sha256_file, tree_files, write_json

LINK_SUFFIX = ".icet-link.json"
RECORD_NAME = ".icet-download.json"  # = icet.download.MANIFEST_NAME (no heavy import here)


def link_path(path: str | os.PathLike) -> Path:
    """Where the link of an output file or folder lies: its hidden sibling."""
    path = Path(path)
    return path.parent / f".{path.name}{LINK_SUFFIX}"


def read_link(path: str | os.PathLike) -> dict | None:
    """The link of `path`, or None when no job recorded one (a file from outside the run)."""
    link = link_path(path)
    if not link.is_file():
        return None
    try:
        data = json.loads(link.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IcetError(f"{link}: unreadable link (not JSON); rerun the job that wrote "
                        f"{path} (snakemake --force {path})") from None
    if not (isinstance(data, dict) and isinstance(data.get("outputs"), dict)
            and isinstance(data.get("inputs"), dict)):
        raise IcetError(f"{link}: not a link (no outputs/inputs objects)")
    return data


def download_record_path(path: Path) -> Path:
    """Where icet.download records a folder (inside it) or a single file (beside it)."""
    return path / RECORD_NAME if path.is_dir() else path.parent / f".{path.name}{RECORD_NAME}"


def download_record(path: str | os.PathLike) -> dict | None:
    """The download record of a downloaded folder or file (icet.download), else None."""
    record = download_record_path(Path(path))
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class Hasher:
    """sha256 of files and digests of folders, each file read once per process (a verify or
    a manifest walks shared inputs many times)."""

    def __init__(self) -> None:
        self._files: dict[tuple, str] = {}

    def file(self, path: str | os.PathLike) -> str:
        path = Path(path)
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._files:
            self._files[key] = sha256_file(path)
        return self._files[key]

    def tree(self, folder: Path) -> dict[str, str]:
        """{relative path: sha256} of a folder's files, hidden files left out (links, records,
        `.part` leftovers are not content), as icet.io.sha256_tree."""
        return {p.relative_to(folder).as_posix(): self.file(p) for p in tree_files(folder)}

    def digest(self, path: str | os.PathLike) -> str:
        """A file's sha256; a folder's: the sha256 of its download record when it has one (the
        download hashed every file once and recorded it; `record_problems` checks the files
        against it), else over its files' paths and sha256 (hidden files left out)."""
        path = Path(path)
        if path.is_dir():
            record = download_record(path)
            return hashlib.sha256(dumps(record if record is not None else self.tree(path))
                                  .encode("utf-8")).hexdigest()
        return self.file(path)


def record_problems(path: Path, shown: str, hasher: Hasher) -> list[str]:
    """A download's files against its records, nested ones too (Detoxify's config snapshot):
    one line per file changed, missing, or (beside a snapshot's own record) added since."""
    hint = f"; download it again (snakemake --force {shown}) or restore it"
    if path.is_file():
        record = download_record(path)
        expected = (record or {}).get("sha256")
        if expected and hasher.file(path) != expected:
            return [f"changed download: {shown} (sha256 differs from "
                    f"{download_record_path(path)}){hint}"]
        return []
    if not path.is_dir() or download_record(path) is None:
        return []
    problems = []
    for record_file in sorted(path.rglob(RECORD_NAME)):
        folder = record_file.parent
        where = (Path(shown) / folder.relative_to(path)).as_posix()
        try:
            record = json.loads(record_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            problems.append(f"unreadable download record: {where}/{RECORD_NAME}")
            continue
        files = record.get("files") if isinstance(record, dict) else None
        for relative, expected in sorted((files or {}).items()):
            target = folder / relative
            if not target.is_file():
                problems.append(f"missing download file: {where}/{relative}{hint}")
            elif hasher.file(target) != expected:
                problems.append(f"changed download file: {where}/{relative} (sha256 differs "
                                f"from {where}/{RECORD_NAME}){hint}")
        for entry in (record.values() if isinstance(record, dict) else []):
            # a URL file fetched into the folder (Detoxify's checkpoint): its name and sha256
            if isinstance(entry, dict) and "url" in entry and entry.get("sha256") and entry.get("path"):
                target = folder / Path(entry["path"]).name
                if target.is_file() and hasher.file(target) != entry["sha256"]:
                    problems.append(f"changed download file: {where}/{target.name} (sha256 "
                                    f"differs from {where}/{RECORD_NAME}){hint}")
        if files is not None and folder == path:
            for relative in visible_files(path):
                if relative not in files:
                    problems.append(f"file not in download record: {where}/{relative}")
    return problems


def visible_files(folder: Path) -> list[str]:
    """A folder's files (hidden ones and those under hidden folders left out), relative."""
    out = []
    for p in sorted(folder.rglob("*")):
        parts = p.relative_to(folder).parts
        if p.is_file() and not any(part.startswith(".") for part in parts):
            out.append(p.relative_to(folder).as_posix())
    return out


def changed_line(path: str, link: dict, now: str) -> str:
    """The one line for a file that differs from what its job wrote."""
    return (f"{path}: changed after rule {link.get('rule', '?')} wrote it (sha256 {now[:12]}, "
            f"recorded {link['outputs'].get(path, '?')[:12]} in {link_path(path)}); rerun that "
            f"job (snakemake --force {path}) or restore the file")


class Chain:
    """The chain of a run's files, resolved against `root` (the working directory the jobs
    ran in: links and indexes name paths relative to it)."""

    def __init__(self, root: str | os.PathLike = ".", hasher: Hasher | None = None) -> None:
        self.root = Path(root)
        self.hasher = hasher or Hasher()
        self.links: dict[str, str] = {}  # every link reached: path -> sha256 (the manifest's)

    def _path(self, relative: str) -> Path:
        return Path(relative) if Path(relative).is_absolute() else self.root / relative

    def check_input(self, path: str) -> str | None:
        """A job's input, before the job runs: the digest it was read at. It must be what
        its own job wrote (its link) and, for a sweep index, what the index records."""
        from icet.shards import index_problems, is_index

        full = self._path(path)
        link = read_link(full)
        has_record = download_record(full) is not None
        if full.is_dir() and link is None and not has_record:
            return None  # a folder from outside the run (a local model): the manifest hashes it
        now = self.hasher.digest(full)
        if link is not None and link["outputs"].get(path, now) != now:
            raise IcetError(changed_line(path, link, now))
        if is_index(full):
            problems = index_problems(path, self.root, digest=self.hasher.file)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise IcetError(problems[0] + more)
        return now

    def problems(self, paths: Iterable[str]) -> list[str]:
        """Every break in the chain behind `paths` (files or folders, relative to root): one
        line each. Folders with no link or record of their own are walked file by file."""
        from icet.shards import index_problems, is_index

        todo, seen, found = [Path(p).as_posix() for p in paths], set(), []
        readers: dict[str, list[str]] = {}  # input changed since it was read -> its readers
        while todo:
            path = todo.pop(0)
            if path in seen:
                continue
            seen.add(path)
            full = self._path(path)
            if not full.exists():
                continue  # the manifest names missing files; a link's missing input below
            link = read_link(full)
            if full.is_dir() and link is None and download_record(full) is None:
                todo += [(Path(path) / p).as_posix() for p in visible_files(full)]
                continue
            if link is not None:
                self.links[link_path(path).as_posix()] = self.hasher.file(link_path(full))
                now = self.hasher.digest(full)
                if link["outputs"].get(path, now) != now:
                    found.append(changed_line(path, link, now))
                for source, recorded in sorted(link["inputs"].items()):
                    if recorded is None:
                        continue
                    source_full = self._path(source)
                    if not source_full.exists():
                        found.append(f"missing input: {source} (read by rule "
                                     f"{link.get('rule', '?')} for {path})")
                    elif self.hasher.digest(source_full) != recorded:
                        readers.setdefault(source, []).append(f"rule {link.get('rule', '?')} "
                                                              f"for {path}")
                    todo.append(source)
            if full.is_file() and is_index(full):
                found += index_problems(path, self.root, digest=self.hasher.file)
                data = json.loads(full.read_text(encoding="utf-8")).get("inputs") or {}
                todo += sorted(data.get("data") or {})
            found += record_problems(full, path, self.hasher)
        for source, who in sorted(readers.items()):
            more = f" and {len(who) - 1} more" if len(who) > 1 else ""
            found.append(f"changed input: {source} changed after {who[0]}{more} read it; "
                         f"rerun what reads it (snakemake --forcerun) or restore it")
        return list(dict.fromkeys(found))


class Job:
    """The frame of one workflow job (a rule's script): see the module docstring."""

    def __init__(self, snakemake: Any) -> None:
        from icet.redact import install_excepthook

        self.rule = str(getattr(snakemake, "rule", "?"))
        logs = [str(p) for p in getattr(snakemake, "log", [])]
        install_excepthook(logs[0] if logs else None)
        self.outputs = [Path(p).as_posix() for p in snakemake.output]
        self.chain = Chain(".")
        inputs = [Path(p).as_posix() for p in snakemake.input]
        self.inputs = {path: self.chain.check_input(path) for path in dict.fromkeys(inputs)}

    def done(self) -> None:
        """A link beside every output: the outputs' and the inputs' digests, the rule and the
        machine. Written after the outputs, so an output never has a link it does not match."""
        from icet.machine import machine

        record = {"rule": self.rule,
                  "outputs": {path: self.chain.hasher.digest(path) for path in self.outputs},
                  "inputs": self.inputs, "machine": machine()}
        for path in self.outputs:
            write_json(link_path(path), record)
