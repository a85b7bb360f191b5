"""The toy organism's settings, read from schema/toy.schema.yaml: the one source of their
defaults, types and ranges.

Filled at use, not when a config is parsed: a rule passes on only what the run config
sets (rules train_toy_stage, train_toy_judge, the study's stages), and the organism study
names each stage's folder by a hash of those params, so a default added or moved here never
renames a trained stage or reruns a rule. Parsing only checks (icet.config.check_config,
icet.toy.study.plan_study); each training function fills its params with `fill`, as
icet.lppo.config.fill_lppo does for L-PPO.

Torch-free: the report side and the Snakefile import it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from icet.errors import IcetError

SCHEMA_FILE = "toy.schema.yaml"  # under schema/


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The toy schema (shared: callers copy before changing anything)."""
    from icet.config import REPO_ROOT, load_yaml

    return load_yaml(REPO_ROOT / "schema" / SCHEMA_FILE)


def _parts(section: str) -> list[str]:
    return [part for part in section.split(".") if part]


def node(section: str) -> dict:
    """The schema of one section: "" (the whole toy block), "arch", "stages.vision", ..."""
    out = schema()
    for part in _parts(section):
        try:
            out = out["properties"][part]
        except KeyError:
            raise IcetError(f"toy settings: no section {section!r} in schema/{SCHEMA_FILE}") from None
    return out


def defaults(section: str) -> dict[str, Any]:
    """The schema's default of every key of a section that has one."""
    return {key: copy.deepcopy(spec["default"])
            for key, spec in node(section)["properties"].items() if "default" in spec}


def check(section: str, params: Any, where: str, prefix: str = "") -> None:
    """Stop with one line naming the key if `params` does not fit the section's schema.

    The key is named from `prefix` + section ("toy." in a run config, nothing in a study
    file's variant or a direct call)."""
    from icet.config import validate

    path = _parts(prefix) + _parts(section)
    instance, wrapped = params, {k: v for k, v in node(section).items() if k != "$schema"}
    for part in reversed(path):
        instance = {part: instance}
        wrapped = {"type": "object", "properties": {part: wrapped}}
    validate(instance, wrapped, where)


def fill(section: str, params: dict | None, where: str | None = None) -> dict[str, Any]:
    """`params` checked, with the section's defaults where a key is absent. One level: a
    given mapping (arch, rates, groups) replaces its default whole, as in a config file."""
    params = dict(params or {})
    check(section, params, where or f"toy {section or 'settings'}")
    return {**defaults(section), **params}


def value(key: str, given: Any = None, where: str | None = None) -> Any:
    """One setting (e.g. "image_size", "data.base_refusal_share"): `given` checked, or the
    schema's default when None."""
    section, _, name = key.rpartition(".")
    if given is None:
        return copy.deepcopy(node(section)["properties"][name]["default"])
    check(section, {name: given}, where or f"toy {key}")
    return given


def check_toy(toy: dict, source: str) -> None:
    """A run config's `toy` block: keys, types and ranges from the schema, then what a schema
    cannot say (the architecture's image_size a multiple of its patch_size). Nothing filled."""
    from icet.toy.organism import resolve_arch

    check("", toy, source, prefix="toy")
    resolve_arch(toy.get("arch"), f"{source}: key 'toy.arch'")
