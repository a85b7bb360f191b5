"""The data-set plug-in: what a source declares, and the registry that collects the sources.

A source is one module of this package that calls `register(Source(...))`: its config block
under `data:`, its raw downloads, the test sets it builds (each with its role, row rules and
the name tables give it), its builder, what the reproduction report says of a build, and its
stand-in for the rehearsal mirror. Importing the package's modules registers them, so a new
data set needs no list to be added to (the judges' plug-ins work the same way).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Callable
from urllib.parse import urlsplit

from icet.errors import IcetError

# What a set is for, and the config key that lists the sets of that role.
ROLES = {"safety": "testsets", "utility": "utility_sets", "train": "train_set"}
KINDS = ("harmful", "benign", "lookalike")  # the row kinds a set may hold (icet.rows)
DOWNLOAD_KINDS = ("file", "archive", "snapshot")


@dataclass(frozen=True)
class DataSet:
    """One JSONL file a source's builder writes, `<name>.jsonl`, and the rules of its rows."""

    name: str  # the config's and the file's name: cp
    role: str  # one of ROLES
    title: str  # how tables and captions name it: CP
    kinds: tuple[str, ...] = KINDS  # the row kinds it may hold (icet.rows.check_dataset_row)
    answer_required: bool = False  # rows carry a reference answer (utility is scored on it)
    # The row key whose value is one independent request: rows sharing it are resampled
    # together by the bootstrap (icet.stats). The prompt text, unless every row shares one
    # (SafeBench: FigStep's fixed prompt; the request is in the image).
    unit: str = "prompt"

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"test set {self.name}: role {self.role!r} not in {tuple(ROLES)}")
        if not set(self.kinds) <= set(KINDS):
            raise ValueError(f"test set {self.name}: kinds {self.kinds} not among {KINDS}")


@dataclass(frozen=True)
class Download:
    """A raw download into `<resources_dir>/raw/<name>/`, its keys in config block `data.<block>`.

    kind "file": one file (`<prefix>url`, `<prefix>sha256`), kept under its URL's file name;
    "archive": a zip (same keys), unpacked; "snapshot": a Hub data set repo (`repo`,
    `revision`), the files matching `allow_patterns`."""

    name: str
    kind: str
    block: str
    prefix: str = ""
    allow_patterns: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.kind not in DOWNLOAD_KINDS:
            raise ValueError(f"download {self.name}: kind {self.kind!r} not in {DOWNLOAD_KINDS}")

    def settings(self, data: dict) -> dict:
        """What rule download_data passes to `fetch`, from the config's `data` block."""
        block = data.get(self.block)
        if not isinstance(block, dict):
            raise IcetError(f"data.{self.block}: missing (download {self.name} reads it)")
        if self.kind == "snapshot":
            return {"kind": self.kind, "repo": block["repo"], "revision": block["revision"],
                    "allow_patterns": list(self.allow_patterns or ()) or None}
        return {"kind": self.kind, "url": block[f"{self.prefix}url"],
                "sha256": block.get(f"{self.prefix}sha256"),
                "file": PurePosixPath(urlsplit(block[f"{self.prefix}url"]).path).name}

    def record(self, folder: str, data: dict) -> str:
        """Where the download's record is found (icet.provenance.download_records): a file
        download's file itself, else its folder."""
        if self.kind == "file":
            return f"{folder}/{self.settings(data)['file']}"
        return folder


@dataclass(frozen=True)
class Source:
    """One data source: its downloads, the sets it builds and how.

    `inputs(data)` names the builder's inputs: {input name: download name}, any source's
    download (COCO's images serve several); `settings(config)` gives the builder's keyword
    settings; `build(inputs, out_dir, seed=, log=, **settings)` writes every set of the
    source into `out_dir` at once (icet.datasets.files.write_sets) and returns build.json's
    content. `describe(build)` gives the reproduction report's lines on a build; `mirror(block,
    site)` writes the rehearsal mirror's stand-in for each download (icet.mirror.build.Site).
    `gate`: every sweep waits for this build (its check of images fetched by hand comes
    before any GPU job)."""

    name: str
    title: str
    downloads: tuple[Download, ...] = ()
    sets: tuple[DataSet, ...] = ()
    inputs: Callable[[dict], dict[str, str]] = lambda data: {}
    settings: Callable[[dict], dict[str, Any]] = lambda config: {}
    build: Callable[..., dict] | None = None
    describe: Callable[[dict], list[str]] = lambda build: []
    mirror: Callable[..., dict | None] | None = None
    gate: bool = False

    def __post_init__(self):
        if self.sets and self.build is None:
            raise ValueError(f"source {self.name}: sets but no builder")


REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add a source; its set and download names must be new."""
    if source.name in REGISTRY:
        raise ValueError(f"data source {source.name} registered twice")
    taken_sets = {s.name for other in REGISTRY.values() for s in other.sets}
    taken_downloads = {d.name for other in REGISTRY.values() for d in other.downloads}
    for name in (s.name for s in source.sets):
        if name in taken_sets:
            raise ValueError(f"data source {source.name}: test set {name} already registered")
    for name in (d.name for d in source.downloads):
        if name in taken_downloads:
            raise ValueError(f"data source {source.name}: download {name} already registered")
    REGISTRY[source.name] = source
    _SETS.clear()
    return source


def registry() -> dict[str, Source]:
    """Every data source, by name. Importing each module of this package registers it."""
    import importlib
    import pkgutil

    import icet.datasets as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"icet.datasets.{module.name}")
    return dict(sorted(REGISTRY.items()))


def all_sets() -> dict[str, DataSet]:
    """Every registered data set, by name."""
    return {s.name: s for source in registry().values() for s in source.sets}


def data_set(name: str) -> DataSet | None:
    """The registered set called `name`, or None (a test's own set). Asked once per row by
    icet.rows, so the sets are collected once."""
    if not _SETS:
        _SETS.update(all_sets())
    return _SETS.get(name)


_SETS: dict[str, DataSet] = {}


def source_of(testset: str) -> Source:
    """The source that builds `testset`."""
    for source in registry().values():
        if any(s.name == testset for s in source.sets):
            return source
    raise IcetError(f"test set {testset!r}: no data source builds it (known: "
                    f"{', '.join(sorted(all_sets()))})")


def downloads() -> dict[str, Download]:
    """Every raw download of every source, by name."""
    return {d.name: d for source in registry().values() for d in source.downloads}


def titles(names=None) -> dict[str, str]:
    """{set: title} for `names` in their order (default: every registered set)."""
    sets = all_sets()
    return {n: sets[n].title if n in sets else n for n in (sets if names is None else names)}


def build(source: str, inputs: dict[str, str | os.PathLike], out_dir: str | os.PathLike, *,
          seed: int, settings: dict | None = None, log: str | os.PathLike | None = None) -> dict:
    """Build every set of `source` into `out_dir` (rule build_<source>); build.json's content."""
    from pathlib import Path

    found = registry().get(source)
    if found is None or found.build is None:
        raise IcetError(f"data source {source!r}: no builder (known: "
                        f"{', '.join(n for n, s in registry().items() if s.build)})")
    return found.build({k: Path(v) for k, v in inputs.items()}, out_dir, seed=seed, log=log,
                       **(settings or {}))


def fetch(settings: dict, out_dir: str | os.PathLike, log: str | os.PathLike | None = None) -> dict:
    """Rule download_data: one raw download (`Download.settings`) into `out_dir`, atomically,
    with its record (icet.download): a file keeps its URL's name inside the folder."""
    from pathlib import Path

    from icet import download
    from icet.io import atomic_dir

    kind = settings["kind"]
    if kind == "snapshot":
        return download.download_snapshot(settings["repo"], settings["revision"], out_dir,
                                          repo_type="dataset",
                                          allow_patterns=settings.get("allow_patterns"), log=log)
    if kind == "archive":
        return download.download_archive(settings["url"], out_dir, settings.get("sha256"), log=log)
    if kind == "file":
        with atomic_dir(out_dir) as tmp:
            return download.download_url(settings["url"], Path(tmp) / settings["file"],
                                         settings.get("sha256"), log=log, record=True)
    raise IcetError(f"download kind {kind!r} not in {DOWNLOAD_KINDS}")
