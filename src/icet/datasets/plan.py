"""What a run's config asks of the data sets: which sets, built by which sources from which
downloads, and where each lands. rules/common.smk and rules/datasets.smk derive their lists
from here, so a new source needs no edit there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from icet.datasets.base import ROLES, Source, all_sets, downloads, registry, source_of
from icet.errors import IcetError


@dataclass(frozen=True)
class RunSets:
    """The sets a run sweeps (safety, then utility) and the one L-PPO trains on."""

    safety: list[str]
    utility: list[str]
    train: str

    @property
    def swept(self) -> list[str]:
        return self.safety + self.utility

    @property
    def built(self) -> list[str]:
        return self.swept + [self.train]


def run_sets(config: dict, available: Iterable[str] | None = None) -> RunSets:
    """The config's sets in its order. `available`: the sets the data source has (the toy's
    own list); a set it lacks is left out, so a paper set with no toy counterpart is simply
    absent from a toy run."""
    keep = (lambda name: True) if available is None else set(available).__contains__
    return RunSets(safety=[s for s in config["testsets"] if keep(s)],
                   utility=[s for s in config["utility_sets"] if keep(s)],
                   train=config["train_set"])


def check_sets(config: dict, where: str = "config") -> None:
    """Every set the config names is registered with the role of the key naming it, and, for
    a paper run, every source building one has its `data` block (one line otherwise)."""
    sets = all_sets()
    named = [(key, i, name) for key in ("testsets", "utility_sets")
             for i, name in enumerate(config.get(key, []))]
    if "train_set" in config:
        named.append(("train_set", None, config["train_set"]))
    role_of = {key: role for role, key in ROLES.items()}
    for key, i, name in named:
        at = key if i is None else f"{key}[{i}]"
        role = role_of[key]
        fits = sorted(n for n, s in sets.items() if s.role == role)
        if name not in sets or sets[name].role != role:
            raise IcetError(f"{where}: key '{at}': {name!r} is not a {role} set (registered: "
                            f"{', '.join(fits)}; icet.datasets)")
    if config.get("data_source", "paper") == "paper":
        data = config.get("data", {})
        for source in sources(name for _, _, name in named):
            for block in sorted({d.block for d in _downloads_of(source, data)}):
                if not isinstance(data.get(block), dict):
                    raise IcetError(f"{where}: key 'data.{block}' missing: {source.title} "
                                    f"({', '.join(s.name for s in source.sets)}) is built from it")


def sources(sets: Iterable[str]) -> list[Source]:
    """The sources that build `sets`, by name."""
    found = {source_of(s).name: source_of(s) for s in sets}
    return [found[n] for n in sorted(found)]


def paper_sources() -> list[Source]:
    """Every source with a builder: rules/datasets.smk defines rule build_<name> for each."""
    return [s for s in registry().values() if s.build is not None]


def dataset_path(resources: str, testset: str) -> str:
    """Where a paper set's JSONL lands: its source's folder, which the build replaces whole."""
    return f"{resources}/paper/{source_of(testset).name}/{testset}.jsonl"


def _downloads_of(source: Source, data: dict) -> list:
    every = downloads()
    return [every[name] for name in source.inputs(data).values()]


def build_inputs(source: Source, data: dict, resources: str) -> dict[str, str]:
    """A build rule's inputs: {input name: the download's folder}."""
    return {key: f"{resources}/raw/{name}" for key, name in source.inputs(data).items()}


def download_settings(name: str, data: dict) -> dict:
    """What rule download_data passes on for download `name`."""
    return downloads()[name].settings(data)


def download_records(sets: Iterable[str], data: dict, resources: str) -> list[str]:
    """Where the records of every download these sets need lie (a file download's file, else
    its folder), for the manifest and the summary's provenance warnings."""
    needed = {d.name: d for source in sources(sets) for d in _downloads_of(source, data)}
    return [needed[n].record(f"{resources}/raw/{n}", data) for n in sorted(needed)]


def gate(sets: Iterable[str], resources: str) -> list[str]:
    """What every sweep waits for: the sets of the sources whose build checks images a user
    fetches by hand (JailbreakV-28K's), so a missing image stops the run before any GPU job."""
    return [dataset_path(resources, s) for s in sorted(set(sets)) if source_of(s).gate]
