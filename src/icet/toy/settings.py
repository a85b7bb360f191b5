"""The toy organism's settings, from the toy's schema (icet/schemas/toy.schema.yaml, read
through icet.schemas): the one source of their defaults, types and ranges.

Filled at use, not when a config is parsed: a rule passes on only what the run config
sets (rules train_toy_stage, train_toy_judge, the study's stages), and the organism study
names each stage's folder by a hash of those params, so a default added or moved in the
schema never renames a trained stage or reruns a rule. Parsing only checks
(icet.config.check_config, icet.toy.study.plan_study); each training function fills its
params with `fill`, as icet.lppo.config.fill_lppo does for L-PPO.

Torch-free: the toy's rules import it when the workflow is parsed.
"""

from __future__ import annotations

from typing import Any

from icet import schemas

SCHEMA = "toy"


def check(section: str, params: Any, where: str, prefix: str = "") -> None:
    """Stop with one line naming the key if `params` does not fit the section's schema.

    The key is named from `prefix` + section ("toy." in a run config, nothing in a study
    file's variant or a direct call)."""
    schemas.check(params, SCHEMA, section, where=where,
                  prefix=".".join(filter(None, (prefix, section))))


def fill(section: str, params: dict | None, where: str | None = None) -> dict[str, Any]:
    """`params` checked, with the section's defaults where a key is absent. One level: a
    given mapping (arch, rates, groups) replaces its default whole, as in a config file, and
    a stage's metrics.json records its params as given."""
    return schemas.fill(dict(params or {}), SCHEMA, section,
                        where=where or f"toy {section or 'settings'}", levels=1)


def value(key: str, given: Any = None, where: str | None = None) -> Any:
    """One setting (e.g. "image_size", "data.base_refusal_share"): `given` checked, or the
    schema's default when None."""
    if given is None:
        return schemas.default(SCHEMA, key)
    section, _, name = key.rpartition(".")
    check(section, {name: given}, where or f"toy {key}")
    return given
