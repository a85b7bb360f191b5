"""Which adapter drives which architecture, and the layer facts the workflow needs per architecture.

One entry per config `architecture` value (schema enum): the config.json `model_type`s it
loads, the adapter class and the transformers class (as "module:Class", imported on first
use), where the checkpoint's config.json keeps N, and which ICET layer the unmodified model
uses, and which class loads its processor. Adding an architecture is one `register(...)`
line here plus its adapter module.

This module imports neither torch nor transformers, so the Snakefile can ask for a model's
default layer or check its `num_layers` against a downloaded config.json at DAG-parse time
(every cluster job re-parses the workflow) without loading either library.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from icet.errors import IcetError

# What the unmodified model feeds its LM, in ICET terms (docs/contracts.md):
# "feature_layer": hidden_states[vision_feature_layer] (LLaVA: -2, i.e. N-1);
# "last": the encoder's final output, l = N (Mllama, Qwen2.5-VL).
DEFAULTS = ("feature_layer", "last")
# LLaVA-1.5 / LLaVA-NeXT's vision_feature_layer (llava-hf config.json): the penultimate layer.
LLAVA_FEATURE_LAYER = -2


@dataclass(frozen=True)
class Architecture:
    name: str  # the config's `architecture`
    model_types: tuple[str, ...]  # config.json model_type values this adapter loads
    adapter: str  # "module:Class" of the VLMAdapter subclass
    model_class: str  # "module:Class" of the transformers (or our subclassed) model class
    layers_key: str  # vision_config key holding N in config.json
    default: str  # one of DEFAULTS
    lppo: bool = True  # L-PPO's rollouts and scoring can drive it (icet.lppo)
    processor: str = "transformers:AutoProcessor"  # "module:Class" whose from_pretrained loads it


ARCHITECTURES: dict[str, Architecture] = {}


def register(architecture: Architecture) -> Architecture:
    if architecture.default not in DEFAULTS:
        raise IcetError(f"architecture {architecture.name}: default {architecture.default!r} "
                        f"is not one of {', '.join(DEFAULTS)}")
    ARCHITECTURES[architecture.name] = architecture
    return architecture


register(Architecture("llava", ("llava",), "icet.models.llava:LlavaAdapter",
                      "transformers:LlavaForConditionalGeneration", "num_hidden_layers", "feature_layer"))
register(Architecture("llava_next", ("llava_next",), "icet.models.llava:LlavaAdapter",
                      "transformers:LlavaNextForConditionalGeneration", "num_hidden_layers",
                      "feature_layer"))
# Mllama loads as our subclass that adds the `icet_layer` keyword (icet.models.mllama).
register(Architecture("mllama", ("mllama",), "icet.models.mllama:MllamaAdapter",
                      "icet.models.mllama:IcetMllamaForConditionalGeneration", "num_hidden_layers",
                      "last"))
# Sweep only: L-PPO scores with 2-D position ids, where Qwen2.5-VL needs its 3-D M-RoPE ones.
register(Architecture("qwen2_5_vl", ("qwen2_5_vl",), "icet.models.qwen2_5_vl:Qwen25VLAdapter",
                      "icet.models.qwen2_5_vl:IcetQwen2_5_VLForConditionalGeneration", "depth",
                      "last", lppo=False,
                      processor="icet.models.qwen2_5_vl:ImageOnlyQwen2_5_VLProcessor"))


def architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise IcetError(f"architecture {name!r} is not one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def of_model_type(model_type: Any, where: str = "model") -> Architecture:
    """The entry that loads a config.json `model_type` (IcetError naming `where` if none)."""
    for entry in ARCHITECTURES.values():
        if model_type in entry.model_types:
            return entry
    supported = [t for entry in ARCHITECTURES.values() for t in entry.model_types]
    raise IcetError(f"{where}: model_type {model_type!r} is not supported "
                    f"(supported: {', '.join(supported)})")


def load_object(path: str) -> Any:
    """The object "module:Name" names (imported now: adapters pull in torch and transformers)."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _field(config: Any, key: str) -> Any:
    """`key` of a config.json dict or a transformers config (None when absent)."""
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


def checkpoint_num_layers(name: str, config: Any) -> int | None:
    """N as the checkpoint's config says (a config.json dict or a loaded config), or None when
    a config.json leaves it to the class default (then only the loaded model can tell)."""
    vision = _field(config, "vision_config")
    value = None if vision is None else _field(vision, architecture(name).layers_key)
    return None if value is None else int(value)


def feature_layer_to_icet(index: Any, num_layers: int, where: str = "model") -> int:
    """A transformers `vision_feature_layer` (negative or not) as the ICET l in 0..N."""
    if isinstance(index, (list, tuple)):
        raise IcetError(f"{where}: vision_feature_layer {list(index)} selects several layers; "
                        "ICET needs a model trained on a single layer")
    if isinstance(index, bool) or not isinstance(index, int) or not -(num_layers + 1) <= index <= num_layers:
        raise IcetError(f"{where}: vision_feature_layer {index!r} out of range for {num_layers} layers")
    return index + num_layers + 1 if index < 0 else index


def default_layer(name: str, num_layers: int, config: Any = None, where: str = "model") -> int:
    """The ICET layer the unmodified model uses (docs/contracts.md): the one place it is computed.

    LLaVA-style models: their `vision_feature_layer` (from `config`, the checkpoint's config;
    without one, the released checkpoints' -2, i.e. N-1). Mllama and Qwen2.5-VL: N.
    """
    entry = architecture(name)
    if entry.default == "last":
        return int(num_layers)
    index = LLAVA_FEATURE_LAYER if config is None else _field(config, "vision_feature_layer")
    return feature_layer_to_icet(LLAVA_FEATURE_LAYER if index is None else index, int(num_layers), where)


def check_checkpoint(name: str, model: str, expected: int, model_dir: str | os.PathLike) -> None:
    """Stop when `model_dir`/config.json is not architecture `name` with `expected` layers
    (DAG parse time: reads one JSON file, loads nothing)."""
    from icet.io import read_json

    path = Path(model_dir) / "config.json"
    config = read_json(path)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in architecture(name).model_types:
        raise IcetError(f"{model}: config architecture is {name} but {path} has model_type {model_type!r}")
    check_num_layers(name, model, expected, model_dir, config)


def check_num_layers(name: str, model: str, expected: int, model_dir: str | os.PathLike,
                     config: Any) -> None:
    """Stop when the run's `num_layers` for `model` is not the checkpoint's N (one line).

    `config` is the loaded config (load time) or the config.json dict (parse time); a
    config.json that leaves N to the class default passes here and is checked at load time.
    """
    folder = Path(model_dir)
    actual = checkpoint_num_layers(name, config)
    if actual is not None and actual != int(expected):
        raise IcetError(f"{model}: config num_layers is {expected} but {folder / 'config.json'} "
                        f"has {actual} vision layers ({architecture(name).layers_key})")
