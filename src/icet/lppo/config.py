"""L-PPO's hyperparameters: one flat, typed record, filled from the config schema.

The paper states none of these. Their defaults, each with its reason, live in one place: the
`lppo` block of icet/schemas/config.schema.yaml (the usual PPO-for-LMs values, Ziegler et al. 2019
and trl's PPO, where the paper is silent); the workflow config overrides them. `from_dict`
fills what a dict leaves out from that schema, so a test or bench that builds LppoParams
directly gets the values a run gets.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Sequence

from icet import schemas
from icet.errors import IcetError

LAYER_MODES = ("fixed", "uniform", "groups")
KL_MODES = ("fixed", "adaptive")


@functools.lru_cache(maxsize=1)
def tuning_keys() -> frozenset[str]:
    """The lppo keys that only tune speed or memory (the schema marks them x-tuning: batch
    sizes, gradient accumulation and checkpointing, checkpoint spacing): a rule passes them
    apart from the params that rerun it, and a resume may change them."""
    from icet.config import tuning_paths

    return frozenset(path[1] for path in tuning_paths() if path[0] == "lppo" and len(path) == 2)


def schema_defaults() -> dict[str, Any]:
    """Every lppo default of the config schema (a fresh copy)."""
    return fill_lppo({})


def reward_judge_defaults() -> dict[str, Any]:
    """The schema's judges.reward defaults: what L-PPO's reward model uses when neither the
    lppo block nor a judges.reward entry (train_lppo_job) sizes it."""
    return schemas.fill({}, "config", "judges.reward")


def fill_lppo(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the schema's lppo defaults filled in where absent (lora's keys too)."""
    filled = schemas.fill(params, "config", "lppo")
    filled.pop("seed", None)  # the rule's seed (rules/common.smk lppo_seed), not a step setting
    return filled


@dataclass
class LppoParams:
    """What each field is; its default and the reason for it: the schema's `lppo` block."""

    steps: int  # PPO iterations (rollout batch -> ppo_epochs of updates)
    rollout_batch: int  # prompts per rollout, per process
    minibatch: int  # samples per optimiser step; must divide rollout_batch
    ppo_epochs: int  # passes over each rollout batch
    lr: float
    max_grad_norm: float  # gradient-norm clip of the LM's weights and of the value head, each
    ratio_threshold: float  # skip a minibatch whose mean ratio exceeds this (trl's guard)
    warmup_steps: int  # linear lr warm-up (optimiser steps); constant afterwards
    eta: float  # KL coefficient (initial, in adaptive mode)
    kl_mode: str  # "fixed" is the paper's r - eta*KL; "adaptive" = Ziegler's controller
    target_kl: float  # adaptive mode: target summed KL per response
    kl_horizon: int  # adaptive mode: controller horizon in samples
    gamma: float
    lam: float  # GAE lambda
    clip: float  # PPO ratio clip
    clip_value: float  # value clip around the rollout's values
    c1: float  # value-loss weight
    # Does the value loss train the LM (a shared backbone, as trl) or only the linear head on
    # its detached hidden state? See rollout.PolicyWithValue and docs/kernel-paths.md.
    value_trains_lm: bool
    c2: float  # entropy bonus weight
    whiten_advantages: bool  # per-rollout advantage normalisation
    max_new_tokens: int  # rollout length
    temperature: float
    top_k: int  # 0 = off
    layer_mode: str  # "fixed" | "uniform" over 0..N | "groups" (see rollout.sample_layers)
    layer: int | None  # fixed mode: ICET layer l; None = the model's default (N-1)
    groups: dict[str, list[int]]  # groups mode: {name: [lo, hi]}, the model's (models[].groups)
    lora: dict[str, Any]  # r, alpha, dropout, target_modules
    full_finetune: bool  # train every LM weight instead of LoRA (needs a reference copy)
    gradient_checkpointing: bool  # trade compute for memory on large LMs
    grad_accum: int  # micro-batches per minibatch (memory); the optimiser step is unchanged
    checkpoint_every: int  # steps between resumable checkpoints (the last step always)
    keep_checkpoints: int  # newest checkpoints kept on disk
    reward_batch_size: int | None  # reward model batch size; None = judges.reward's
    reward_max_length: int | None  # reward model truncation; None = judges.reward's
    reward_input_format: str | None  # how the pair is written for it; None = judges.reward's

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "LppoParams":
        """Build from a config's `lppo` block plus the model's `groups` (absent: none); what
        the block leaves out takes the schema's default. Unknown keys and impossible values
        stop with one line."""
        params = dict(params or {})
        params.pop("seed", None)  # the config block's seed is the run's to pass (train_lppo's `seed`)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise IcetError(f"lppo params: unknown key(s) {', '.join(unknown)}")
        lora_keys = set(schemas.node("config", "lppo.lora")["properties"])
        bad = sorted(set(params.get("lora") or {}) - lora_keys)
        if bad:
            raise IcetError(f"lppo params: lora: unknown key(s) {', '.join(bad)}")
        if params.get("lora") is None:
            params.pop("lora", None)
        groups = params.pop("groups", None) or {}  # per model, not an lppo setting
        out = cls(**fill_lppo(params), groups=groups)
        out.validate()
        return out

    def validate(self) -> None:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise IcetError(f"lppo params: {key} = {getattr(self, key)!r}: {why}")

        for key in ("steps", "rollout_batch", "minibatch", "ppo_epochs", "grad_accum",
                    "checkpoint_every", "keep_checkpoints", "max_new_tokens", "kl_horizon",
                    "reward_batch_size", "reward_max_length"):
            if key.startswith("reward_") and getattr(self, key) is None:
                continue  # judges.reward's (reward_settings)
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key,
                 "must be an integer >= 1")
        need(self.rollout_batch % self.minibatch == 0, "minibatch", "must divide rollout_batch")
        need(self.minibatch % self.grad_accum == 0, "grad_accum", "must divide minibatch")
        need(self.layer_mode in LAYER_MODES, "layer_mode", f"must be one of {LAYER_MODES}")
        if self.reward_input_format is not None:
            from icet.judges.reward import INPUT_FORMATS

            need(self.reward_input_format in INPUT_FORMATS, "reward_input_format",
                 f"must be one of {INPUT_FORMATS} or null")
        need(self.kl_mode in KL_MODES, "kl_mode", f"must be one of {KL_MODES}")
        need(self.temperature > 0, "temperature", "must be > 0")
        need(self.top_k >= 0, "top_k", "must be >= 0")
        need(self.lr > 0, "lr", "must be > 0")
        need(self.eta >= 0, "eta", "must be >= 0")
        need(0 <= self.lam <= 1 and 0 <= self.gamma <= 1, "lam", "lam and gamma lie in [0, 1]")
        need(self.layer is None or isinstance(self.layer, int), "layer", "must be an int or null")
        if self.layer_mode == "groups":
            need(bool(self.groups), "groups", "layer_mode 'groups' needs at least one group")
        for name, bounds in self.groups.items():
            if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2
                    or not all(isinstance(b, int) for b in bounds) or bounds[0] > bounds[1]):
                raise IcetError(f"lppo params: groups.{name} = {bounds!r}: must be [lo, hi], lo <= hi")

    def reward_settings(self) -> dict[str, Any]:
        """The reward model's batch_size, max_length and input_format: these params', else
        the schema's judges.reward defaults."""
        judge = reward_judge_defaults()
        return {"batch_size": self.reward_batch_size or judge["batch_size"],
                "max_length": self.reward_max_length or judge["max_length"],
                "input_format": self.reward_input_format or judge["input_format"]}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def layer_ranges(mode: str, num_layers: int, layer: int | None = None,
                 groups: dict[str, Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """The inclusive layer ranges a `mode` draws from, checked: fixed -> [(l, l)], uniform ->
    [(0, N)], groups -> one range per group in sorted name order (see rollout.sample_layers)."""
    def check(value: int, what: str) -> int:
        if not isinstance(value, int) or not 0 <= value <= num_layers:
            raise IcetError(f"lppo params: {what} = {value!r} out of range 0..{num_layers}")
        return value

    if mode == "fixed":
        if layer is None:
            raise IcetError("lppo params: layer_mode 'fixed' needs a layer")
        return [(check(layer, "layer"),) * 2]
    if mode == "uniform":
        return [(0, num_layers)]
    if mode == "groups":
        if not groups:
            raise IcetError("lppo params: layer_mode 'groups' needs at least one group")
        return [(check(groups[k][0], f"groups.{k}[0]"), check(groups[k][1], f"groups.{k}[1]"))
                for k in sorted(groups)]
    raise IcetError(f"lppo params: layer_mode {mode!r} is not fixed, uniform or groups")


def layer_support(mode: str, num_layers: int, layer: int | None = None,
                  groups: dict[str, Sequence[int]] | None = None) -> list[int]:
    """Every layer `rollout.sample_layers` can draw in `mode` (the layers an L-PPO run trains on)."""
    return sorted({l for lo, hi in layer_ranges(mode, num_layers, layer, groups)
                   for l in range(lo, hi + 1)})
