"""Load, complete and validate a run's configuration before any job starts.

The schema (icet/schemas/config.schema.yaml, read through icet.schemas) is the single
source of keys, types and defaults; a `toy` block is checked against the toy's schema
(icet/schemas/toy.schema.yaml). Every problem is reported as one line naming the key (or
file), so a typo costs seconds, not a GPU allocation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from icet import schemas
from icet.errors import IcetError
from icet.models import registry


def load_yaml(path: str | Path) -> dict:
    """Read one YAML mapping; a syntax error names the file and line."""
    path = Path(path)
    if not path.exists():
        raise IcetError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise IcetError(f"{path}:{where}: broken YAML ({problem})") from None
    except UnicodeDecodeError:
        raise IcetError(f"{path}: not UTF-8") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise IcetError(f"{path}: expected a mapping of keys at the top level")
    return data


def merge(base: dict, update: dict) -> dict:
    """Merge like Snakemake merges config files: mappings recursively, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(*paths: str | Path) -> dict:
    """Load and merge config files in order (later wins), then check them."""
    config: dict = {}
    for path in paths:
        config = merge(config, load_yaml(path))
    return check_config(config, source=", ".join(str(p) for p in paths))


def typed_overrides(overrides: Any, schema: dict | None = None, _node: dict | None = None) -> Any:
    """Command-line `--config` values with the types the schema asks for.

    Snakemake reads a nested `--config` value (`judges={guard: {batch_size: 32}}`) with
    YAML's BaseLoader, so every leaf arrives as a string ('32') and fails the schema's
    integer. A string leaf where the schema wants no string is read as YAML once more and
    kept if that gives the wanted type; anything else stays as given (and fails as before)."""
    root = schema or schemas.schema("config")
    node = schemas.resolve(_node if _node is not None else root, root)
    if isinstance(overrides, dict):
        out = {}
        for key, value in overrides.items():
            sub = (node.get("properties") or {}).get(key)
            if sub is None and isinstance(node.get("additionalProperties"), dict):
                sub = node["additionalProperties"]
            out[key] = typed_overrides(value, root, sub) if isinstance(sub, dict) else value
        return out
    if isinstance(overrides, list) and isinstance(node.get("items"), dict):
        return [typed_overrides(v, root, node["items"]) for v in overrides]
    if isinstance(overrides, str):
        wanted = _types(node, root)
        if wanted and "string" not in wanted:
            try:
                value = yaml.safe_load(overrides)
            except yaml.YAMLError:
                return overrides
            if isinstance(value, str) and "number" in wanted:  # YAML 1.1 reads 1e-4 as text
                try:
                    value = float(value)
                except ValueError:
                    return overrides
            kinds = {bool: "boolean", int: "integer", float: "number", type(None): "null",
                     list: "array", dict: "object"}
            kind = kinds.get(type(value))
            if kind in wanted or (kind == "integer" and "number" in wanted):
                return value
    return overrides


def _types(node: dict, root: dict) -> set[str]:
    """The JSON types a schema node allows (through $ref and oneOf/anyOf)."""
    node = schemas.resolve(node, root)
    declared = node.get("type")
    types = set([declared] if isinstance(declared, str) else declared or [])
    if "const" in node:
        types.add({str: "string", bool: "boolean", int: "integer"}.get(type(node["const"]), "string"))
    for variant in node.get("oneOf", []) + node.get("anyOf", []):
        types |= _types(variant, root)
    return types


def check_config(config: dict, source: str = "config") -> dict:
    """Validate against the schema, fill defaults, then check what a schema cannot express.
    A `toy` block is checked against the toy's schema, not filled: the toy's functions fill
    their params at use (icet.toy.settings), so rule params stay what the config says."""
    config = schemas.fill(config, "config", where=source)
    _check_models(config, source)
    from icet.datasets.plan import check_sets

    check_sets(config, source)
    if "toy" in config:
        schemas.check(config["toy"], "toy", where=source, prefix="toy")
    _check_toy_lengths(config, source)
    return config


def _check_toy_lengths(config: dict, source: str) -> None:
    """The toy LM's positions are in the config (toy.arch.max_positions): a generation that
    cannot fit them stops here, not in a job (icet.lengths; other models: at job start)."""
    toy_models = [m for m in config["models"] if m["source"] == "toy"]
    if not toy_models:
        return
    from icet.lengths import check_new_tokens

    limit = (config.get("toy") or {}).get("arch", {}).get("max_positions")
    if limit is None:
        limit = schemas.default("toy", "arch.max_positions")
    stated = "the toy LM's toy.arch.max_positions"
    check_new_tokens(config["generation"]["max_new_tokens"], limit,
                     f"{source}: key 'generation.max_new_tokens'", stated)
    if any(m.get("lppo") for m in toy_models):
        check_new_tokens(config["lppo"]["max_new_tokens"], limit,
                         f"{source}: key 'lppo.max_new_tokens'", stated)


def judge_settings(judges: dict, source: str = "judges") -> dict:
    """A `judges` block with the schema's defaults filled in and checked: the one place judge
    defaults come from (icet.score and icet.judges.vqa call this on what rules pass them)."""
    return schemas.fill(judges, "config", "judges", where=source)


def tuning_paths(schema: dict | None = None) -> list[tuple[str, ...]]:
    """Every key the schema marks `x-tuning: true`, as a path of keys: what only tunes speed,
    memory or placement (batch sizes, the sweep engine, the device), never what a job
    computes. `*` stands for any key of an open mapping."""
    root = schema or schemas.schema("config")
    found: list[tuple[str, ...]] = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        node = schemas.resolve(node, root) if isinstance(node, dict) else node
        if not isinstance(node, dict):
            return
        if node.get("x-tuning") is True:
            found.append(path)
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, path + (key,))
        for variant in node.get("oneOf", []) + node.get("anyOf", []):
            walk(variant, path)

    walk(root, ())
    return sorted(set(found))


def split_tuning(block: Any, at: tuple[str, ...] = ()) -> tuple[Any, dict]:
    """(`block` without its tuning keys, the tuning keys alone) for the config block at key
    path `at` ("judges", ("lppo",), ...). Rules pass the first as params (a change reruns the
    job) and the second through `tuning`, a param Snakemake does not rerun on (a function of
    the job's resources: rules/common.smk `tuning`), so a batch size never discards an
    L-PPO run."""
    at = (at,) if isinstance(at, str) else tuple(at)
    result, tuning = copy.deepcopy(block), {}
    for path in tuning_paths():
        if path[:len(at)] != at or len(path) == len(at):
            continue
        _move(result, tuning, path[len(at):])
    return sorted_keys(result), sorted_keys(tuning)


def sorted_keys(value: Any) -> Any:
    """`value` with every mapping's keys in sorted order (lists keep theirs). Snakemake
    compares a param by its repr, and a config's key order depends on how its files were
    loaded (command line or profile, which file first): sorted, a param is the same
    whichever way the same settings arrived."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def _move(source: Any, target: dict, path: tuple[str, ...]) -> None:
    """Move source[path] to target[path] where present (mappings only)."""
    if not isinstance(source, dict):
        return
    key, rest = path[0], path[1:]
    if not rest:
        if key in source:
            target[key] = source.pop(key)
        return
    if key in source and isinstance(source[key], dict):
        inner: dict = {}
        _move(source[key], inner, rest)
        if inner:
            target.setdefault(key, {}).update(inner)


def with_tuning(block: Any, tuning: dict | None) -> Any:
    """`block` with its tuning keys put back (the inverse of `split_tuning`)."""
    return merge(block, tuning or {}) if isinstance(block, dict) else block


UTILITY_REWARD_KEYS = ("batch_size", "max_length", "input_format")


def utility_reward_settings(config: dict) -> dict:
    """What icet.judges.vqa.score_utility takes from judges.utility_reward (rule score_utility):
    batch and length limits, and how a (question, response) pair is written for it."""
    spec = config["judges"]["utility_reward"]
    return {k: spec[k] for k in UTILITY_REWARD_KEYS if k in spec}


def model_layers(model: dict) -> list[int]:
    """The ICET layers swept for a model: 0..N for "all", else the listed ones, sorted."""
    if model.get("layers", "all") == "all":
        return list(range(model["num_layers"] + 1))
    return sorted(set(model["layers"]))


def _check_models(config: dict, source: str) -> None:
    names = [m["name"] for m in config["models"]]
    for name in names:
        if names.count(name) > 1:
            raise IcetError(f"{source}: key 'models': duplicate model name '{name}'")
    for i, model in enumerate(config["models"]):
        n = model["num_layers"]
        key = f"models[{i}]"
        if model.get("layers", "all") != "all":
            for layer in model["layers"]:
                if not 0 <= layer <= n:
                    raise IcetError(f"{source}: key '{key}.layers': layer {layer} out of range 0..{n}")
        spans = []
        for group, (lo, hi) in model["groups"].items():
            if not 0 <= lo <= hi <= n:
                raise IcetError(f"{source}: key '{key}.groups.{group}': [{lo}, {hi}] out of range 0..{n}")
            for other, (olo, ohi) in spans:
                if lo <= ohi and olo <= hi:
                    raise IcetError(f"{source}: key '{key}.groups.{group}': overlaps group '{other}'")
            spans.append((group, (lo, hi)))
        if model["source"] == "local" and not Path(model["path"]).is_dir():
            raise IcetError(f"{source}: key '{key}.path': model folder {model['path']} not found")
        if model["source"] == "toy" and config.get("data_source") != "toy":
            raise IcetError(f"{source}: key '{key}.source': toy models need data_source: toy")
        if model.get("lppo") and not registry.architecture(model["architecture"]).lppo:
            raise IcetError(f"{source}: key '{key}.lppo': L-PPO does not support architecture "
                            f"{model['architecture']} (sweep only)")
        if model.get("image_preprocessing") == "pad" and model["architecture"] != "llava":
            raise IcetError(f"{source}: key '{key}.image_preprocessing': pad is LLaVA-1.5's; "
                            f"{model['architecture']}'s processor tiles the image itself (use processor)")
    lppo = config.get("lppo", {})
    if lppo.get("layer_mode") == "fixed":
        if lppo.get("layer") is None:
            raise IcetError(f"{source}: key 'lppo.layer': required when lppo.layer_mode is fixed")
        for i, model in enumerate(config["models"]):
            if model.get("lppo") and not 0 <= lppo["layer"] <= model["num_layers"]:
                raise IcetError(f"{source}: key 'lppo.layer': {lppo['layer']} out of range "
                                f"0..{model['num_layers']} of models[{i}]")
    from icet.judges.base import judge_class

    for judge, spec in config.get("judges", {}).items():
        if not isinstance(spec, dict):
            continue
        if spec.get("source") == "toy" and judge_class(judge).toy is None:
            raise IcetError(f"{source}: key 'judges.{judge}.source': {judge} has no toy judge "
                            f"(set judges.{judge}: false in a toy config)")
        if spec.get("source") == "local" and not Path(spec.get("path", "")).exists():
            raise IcetError(f"{source}: key 'judges.{judge}.path': {spec.get('path')} not found")
        if spec.get("source") == "hub" and judge != "toxicity" and "repo" not in spec:
            raise IcetError(f"{source}: key 'judges.{judge}.repo': required for source hub")


def prompting_of(model_spec: dict[str, Any]) -> dict[str, Any]:
    """A models[] entry's system_prompt and image_preprocessing (the schema's defaults when
    absent), as icet.models.load_adapter's keywords."""
    declared = schemas.node("config", "models")["items"]["properties"]
    return {key: model_spec.get(key, declared[key]["default"])
            for key in ("system_prompt", "image_preprocessing")}
