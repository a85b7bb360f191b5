"""The schemas of icet's settings, shipped inside the package: their one reader, the one way
their defaults are filled, and the one-line check against them.

- config.schema.yaml: a run config (icet.config);
- toy.schema.yaml: the toy organism's settings, a run config's `toy` block and the params of
  its training functions (icet.toy.settings);
- organism_study.schema.yaml: the organism study's file (icet.toy.study).

Every default lives in its schema, beside its reason, and nowhere else: code that needs one
asks here (`fill`, `default`). The files are package data (pyproject.toml), so an installed
wheel reads the same schemas as a checkout.

A section is named by its keys, dot-separated ("lppo", "judges.reward", "stages.planted").
Besides JSON Schema, one keyword says what it cannot: `x-divisible-by: {a: b}` on an object
asks that its key a be a multiple of its key b (each the given value, else its default).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from icet.errors import IcetError

FOLDER = Path(__file__).resolve().parent
NAMES = ("config", "toy", "organism_study")


def path(name: str) -> Path:
    """The file of schema `name` ("config", "toy", "organism_study")."""
    if name not in NAMES:
        raise IcetError(f"no schema {name!r} (known: {', '.join(NAMES)})")
    return FOLDER / f"{name}.schema.yaml"


@functools.lru_cache(maxsize=None)
def schema(name: str) -> dict:
    """Schema `name`, read once (shared: callers copy before changing anything)."""
    import yaml

    file = path(name)
    if not file.is_file():
        raise IcetError(f"{file}: schema not found (is icet installed with its package data?)")
    return yaml.safe_load(file.read_text(encoding="utf-8"))


def resolve(node: dict, root: dict) -> dict:
    """`node`, or what its local `$ref` ("#/$defs/...") points to in `root`."""
    ref = node.get("$ref")
    if ref and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        return target
    return node


def _parts(section: str) -> list[str]:
    return [part for part in section.split(".") if part]


def node(name: str, section: str = "") -> dict:
    """The schema of one section of schema `name` ("" = the whole)."""
    root = schema(name)
    out = root
    for part in _parts(section):
        try:
            out = resolve(out["properties"][part], root)
        except KeyError:
            raise IcetError(f"no section {section!r} in {path(name).name}") from None
    return out


def default(name: str, key: str) -> Any:
    """The default of one key ("arch.max_positions", "report.aligned.asr_max"), a fresh copy."""
    section, _, last = key.rpartition(".")
    declared = node(name, section).get("properties", {}).get(last)
    if declared is None or "default" not in declared:
        raise IcetError(f"{path(name).name}: no default for {key!r}")
    return copy.deepcopy(declared["default"])


def fill(instance: Any, name: str, section: str = "", *, where: str | None = None,
         levels: int | None = None) -> Any:
    """A copy of `instance` with the section's defaults where keys are absent, then checked
    against it (`where` names the source in the one-line error; None: not checked).

    All levels by default: a given mapping gets the defaults of its own keys too. `levels=1`
    fills the section's own keys only, a given mapping standing as given (the toy's params:
    icet.toy.settings)."""
    root = schema(name)
    filled = _fill(copy.deepcopy(instance), node(name, section), root, levels)
    if where is not None:
        check(filled, name, section, where=where)
    return filled


def _fill(instance: Any, declared: dict, root: dict, levels: int | None) -> Any:
    schema_node = resolve(declared, root)
    if levels == 0:
        return instance
    deeper = None if levels is None else levels - 1
    if isinstance(instance, dict) and "properties" in schema_node:
        for key, sub_declared in schema_node["properties"].items():
            sub = resolve(sub_declared, root)
            if key not in instance and ("default" in sub_declared or "default" in sub):
                instance[key] = copy.deepcopy(sub_declared.get("default", sub.get("default")))
            if key in instance:
                instance[key] = _fill(instance[key], sub, root, deeper)
    elif isinstance(instance, list) and isinstance(schema_node.get("items"), dict):
        instance = [_fill(item, schema_node["items"], root, deeper) for item in instance]
    return instance


def check(instance: Any, name: str, section: str = "", *, where: str,
          prefix: str | None = None) -> None:
    """Stop with one line naming the key if `instance` does not fit the section. The key is
    named from `prefix` (default: the section's own keys; "toy" for a run config's toy
    block checked against the toy schema)."""
    root = schema(name)
    keys = _parts(section if prefix is None else prefix)
    wrapped = {k: v for k, v in node(name, section).items() if k != "$schema"}
    for part in reversed(keys):
        instance = {part: instance}
        wrapped = {"type": "object", "properties": {part: wrapped}}
    if keys:  # local $refs still resolve against the whole schema
        wrapped = {**{k: root[k] for k in ("$defs",) if k in root}, **wrapped}
    validate(instance, wrapped, where)


def validate(instance: Any, against: dict, where: str) -> None:
    """Stop with one line naming the key if `instance` does not fit schema `against`.

    Integers are strict: JSON Schema counts 3.0 as an integer, but a step count of 3.0 would
    only fail later, inside a loop, so a float stops here."""
    errors = sorted(_validator()(against).iter_errors(instance),
                    key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        raise IcetError(f"{where}: {_one_line(errors[0])}")


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(
        base, validators={"x-divisible-by": _divisible_by},
        type_checker=base.TYPE_CHECKER.redefine(
            "integer", lambda _, value: isinstance(value, int) and not isinstance(value, bool)))


def _divisible_by(validator, pairs: dict, instance: Any, node: dict):
    """`x-divisible-by: {a: b}`: key a a multiple of key b, defaults standing in for absent keys."""
    from jsonschema.exceptions import ValidationError

    if not validator.is_type(instance, "object"):
        return
    declared = node.get("properties", {})
    for a, b in pairs.items():
        value_a = instance.get(a, declared.get(a, {}).get("default"))
        value_b = instance.get(b, declared.get(b, {}).get("default"))
        if isinstance(value_a, int) and isinstance(value_b, int) and value_b > 0 \
                and value_a % value_b:
            yield ValidationError(f"{a} {value_a} not a multiple of {b} {value_b}")


def _key_path(parts) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _one_line(error) -> str:
    import jsonschema

    best = jsonschema.exceptions.best_match([error])
    key = _key_path(best.absolute_path)
    if best.validator == "additionalProperties":
        extra = sorted(set(best.instance) - set(best.schema.get("properties", {})))
        where = key if best.absolute_path else "top level"
        return f"unknown key '{extra[0]}' in {where}" if extra else best.message
    if best.validator == "required":
        return f"{key}: {best.message}"
    return f"key '{key}': {best.message}"
