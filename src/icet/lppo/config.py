"""L-PPO's hyperparameters: one flat, typed record with the reason for each default.

The paper states none of these, so the defaults are the usual PPO-for-LMs values (Ziegler et
al. 2019; trl's PPO) scaled to the toy organism; the workflow config overrides them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

from icet.errors import IcetError

LAYER_MODES = ("fixed", "uniform", "groups")
KL_MODES = ("fixed", "adaptive")


def _default_lora() -> dict[str, Any]:
    return {
        "r": 8,  # rank: enough for a safety behaviour change, small enough to train in minutes
        "alpha": 16,  # scale alpha/r = 2, the common LoRA choice
        "dropout": 0.0,  # no dropout: with it the first PPO epoch's ratio would not start at 1
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                           "gate_proj", "up_proj", "down_proj"],  # the LM's attention + MLP
    }


@dataclass
class LppoParams:
    steps: int = 100  # PPO iterations (rollout batch -> ppo_epochs of updates)
    rollout_batch: int = 16  # prompts per rollout, per process
    minibatch: int = 8  # samples per optimiser step; must divide rollout_batch
    ppo_epochs: int = 4  # passes over each rollout batch (PPO paper / trl default)
    lr: float = 1e-4  # LoRA tolerates a larger step than full fine-tuning
    max_grad_norm: float = 1.0  # clip the global gradient norm, a PPO-for-LMs standard
    warmup_steps: int = 0  # linear lr warm-up (optimiser steps); constant afterwards
    eta: float = 0.2  # initial KL coefficient (trl's init_kl_coef)
    kl_mode: str = "fixed"  # "fixed" is the paper's r - eta*KL; "adaptive" = Ziegler's controller
    target_kl: float = 6.0  # adaptive mode: target summed KL per response (trl default)
    kl_horizon: int = 10000  # adaptive mode: controller horizon in samples (Ziegler et al.)
    gamma: float = 1.0  # no discount: the score is for the whole response
    lam: float = 0.95  # GAE lambda (trl default)
    clip: float = 0.2  # PPO ratio clip (Schulman et al. 2017)
    clip_value: float = 0.2  # value clip around the rollout's values
    c1: float = 0.1  # value-loss weight (trl's vf_coef)
    # Does the value loss train the LM (a shared backbone, as trl) or only the linear head on
    # its detached hidden state? See rollout.PolicyWithValue and docs/kernel-paths.md.
    value_trains_lm: bool = False
    c2: float = 0.0  # entropy bonus weight; 0 as in most PPO-for-LMs recipes
    whiten_advantages: bool = True  # per-rollout advantage normalisation stabilises the step
    max_new_tokens: int = 32  # toy responses are short; the sweep uses the same cap
    temperature: float = 1.0  # sample from the policy itself, as PPO's ratio assumes
    top_k: int = 0  # 0 = off: truncation would make the sampler differ from the policy
    layer_mode: str = "fixed"  # "fixed" | "uniform" over 0..N | "groups" (see rollout.sample_layers)
    layer: int | None = None  # fixed mode: ICET layer l; None = the model's default (N-1)
    groups: dict[str, list[int]] = field(default_factory=dict)  # groups mode: {name: [lo, hi]}
    lora: dict[str, Any] = field(default_factory=_default_lora)
    full_finetune: bool = False  # train every LM weight instead of LoRA (needs a reference copy)
    gradient_checkpointing: bool = False  # trade compute for memory on large LMs
    grad_accum: int = 1  # micro-batches per minibatch (memory); the optimiser step is unchanged
    checkpoint_every: int = 10  # steps between resumable checkpoints (the last step always)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    reward_batch_size: int = 16  # reward model batch size (reward_model_dir only)
    reward_max_length: int = 512  # reward model truncation (reward_model_dir only)

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> "LppoParams":
        """Build from a config dict; unknown keys and impossible values stop with one line."""
        params = dict(params or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise IcetError(f"lppo params: unknown key(s) {', '.join(unknown)}")
        lora = _default_lora()
        lora_given = params.pop("lora", None) or {}
        bad = sorted(set(lora_given) - set(lora))
        if bad:
            raise IcetError(f"lppo params: lora: unknown key(s) {', '.join(bad)}")
        lora.update(lora_given)
        out = cls(**params, lora=lora)
        out.validate()
        return out

    def validate(self) -> None:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise IcetError(f"lppo params: {key} = {getattr(self, key)!r}: {why}")

        for key in ("steps", "rollout_batch", "minibatch", "ppo_epochs", "grad_accum",
                    "checkpoint_every", "keep_checkpoints", "max_new_tokens", "kl_horizon",
                    "reward_batch_size", "reward_max_length"):
            need(isinstance(getattr(self, key), int) and getattr(self, key) >= 1, key,
                 "must be an integer >= 1")
        need(self.rollout_batch % self.minibatch == 0, "minibatch", "must divide rollout_batch")
        need(self.minibatch % self.grad_accum == 0, "grad_accum", "must divide minibatch")
        need(self.layer_mode in LAYER_MODES, "layer_mode", f"must be one of {LAYER_MODES}")
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
