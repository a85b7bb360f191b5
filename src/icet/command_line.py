"""What the `snakemake` command line means, where Snakemake's own reading would mislead.

Two traps, both silent:

- A profile's `configfile` is a default for `--configfile`, so a user's `--configfile
  my.yaml` replaces it: `snakemake --profile toy --configfile my.yaml` drops toy/toy.yaml and
  plans the paper run, downloads included. `profile_configfiles` names the config files of
  the profiles on the command line; the Snakefile loads the missing ones under the user's.
- `--forcerun` (`-R`) takes every word after it, so in `snakemake --forcerun score_testset
  sweep` the target `sweep` becomes one more rule to force and the default target (the
  whole run) is built. `swallowed_targets` names such words that are target rules.

Torch-free and small: the Snakefile imports it while it is parsed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import yaml

# Options that take several values (argparse nargs="+"): a target after one is swallowed.
FORCE_OPTIONS = ("--forcerun", "-R")
PROFILE_FILES = ("config.yaml", "profile.yaml")


def option_values(argv: Sequence[str], names: Iterable[str]) -> list[str]:
    """Every value given to the options `names` (`--opt a b`, `--opt=a`, `-R a`): the words
    after the option up to the next word starting with `-`."""
    names = tuple(names)
    values: list[str] = []
    index = 0
    while index < len(argv):
        word = argv[index]
        option, equals, value = word.partition("=")
        if option in names and equals:
            values.append(value)
        elif word in names:
            index += 1
            while index < len(argv) and not argv[index].startswith("-"):
                values.append(argv[index])
                index += 1
            continue
        index += 1
    return values


def _profile_file(profile: str, basedir: Path) -> Path | None:
    """A profile's YAML: `profile` as a folder or file, from the working directory, else
    from the workflow's folder (where icet's own profiles, toy/ and slurm/, lie)."""
    for base in (Path.cwd(), basedir):
        candidate = base / profile
        if candidate.is_file():
            return candidate
        for name in PROFILE_FILES:
            if (candidate / name).is_file():
                return candidate / name
    return None


def profile_configfiles(argv: Sequence[str], basedir: str | os.PathLike,
                        loaded: Iterable[str | os.PathLike] = (),
                        environ: dict | None = None) -> list[Path]:
    """The config files the profiles on the command line (or SNAKEMAKE_PROFILE) name that
    are not among `loaded` (the command line's --configfile files), in profile order."""
    environ = os.environ if environ is None else environ
    profiles = option_values(argv, ("--profile",))
    if not profiles and environ.get("SNAKEMAKE_PROFILE"):
        profiles = [environ["SNAKEMAKE_PROFILE"]]
    have = {Path(p).resolve() for p in loaded}
    found: list[Path] = []
    for profile in profiles:
        path = _profile_file(profile, Path(basedir))
        if path is None:
            continue
        settings = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        named = settings.get("configfile", settings.get("configfiles")) or []
        for entry in [named] if isinstance(named, str) else named:
            config = path.parent / entry if (path.parent / entry).is_file() else Path(entry)
            if config.resolve() not in have and config.resolve() not in found:
                found.append(config.resolve())
    return found


def command_line_config(workflow_config: str | os.PathLike, configfiles: Iterable[str | os.PathLike],
                        overrides: dict) -> dict:
    """The config Snakemake builds when `configfiles` are named on the command line with
    `overrides` (--config) and the Snakefile loads `workflow_config`: the command line's merged
    first, the Snakefile's file over it, the command line's again on top. Rebuilt this way, a
    profile's file put back first gives the very dict (key order included: params are
    compared by repr) that naming it first would have given."""
    from icet.config import load_yaml, merge

    given: dict = {}
    for path in configfiles:
        given = merge(given, load_yaml(path))
    given = merge(given, overrides)
    return merge(merge(given, load_yaml(workflow_config)), given)


def swallowed_targets(argv: Sequence[str], targets: Iterable[str]) -> list[str]:
    """Target rules (rules with no output: all, sweep, score...) given as values of
    --forcerun / -R, where argparse took them: forcing a target rule does nothing, so the
    word was meant as a target."""
    targets = set(targets)
    return [word for word in option_values(argv, FORCE_OPTIONS) if word in targets]
