"""L-PPO training: PPO whose rollouts, ratios and reference all see layer-l image features.

Run by rule `lppo_train` (rules/lppo.smk) through icet.lppo.launch (one process per GPU);
by hand, on one GPU or many (each process rolls out its own prompts; DDP averages the
gradients):

    accelerate launch -m icet.lppo.trainer MODEL_DIR RT_JSONL OUT_DIR PARAMS_JSON SEED \
        REWARD_MODEL_DIR [LOG]

Policy = the VLM with LoRA on the LM's attention/MLP projections (or, with full_finetune, every
LM weight); the vision tower and projector stay frozen and never reach the optimiser.
Reference = the same model with its adapters disabled, so no second copy is held (a full
fine-tune needs a frozen copy). Each step: sample layers, roll out, score with the reward
model, add the per-token KL penalty, GAE, then ppo_epochs of clipped updates in minibatches.

Reproducibility: each step's sampling is seeded from (seed, step, process), and a checkpoint
holds everything else that carries over (weights, optimiser, scheduler, KL coefficient, data
position, each process's RNG states), so a run resumed from step k ends with the same weights
as one that never stopped. A checkpoint also records fingerprints of the inputs it was made
on (model folder, RT data and its images, reward model, process count): a resume on other
inputs, or with `steps` below the checkpoint, stops with one line instead of continuing.
Nothing in a checkpoint is a pickle: tensors are safetensors (or torch.save of plain
tensors and numbers, loaded with weights_only=True), the rest JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from icet.errors import IcetError
from icet.io import (atomic_dir, atomic_path, dumps, read_json, read_jsonl, write_csv,
                     write_json)
from icet.logs import progress, setup_logging
from icet.lppo.config import LppoParams
from icet.lppo.losses import (AdaptiveKLController, FixedKLController, gae, kl_penalised_rewards,
                              masked_mean, masked_whiten, ppo_clip_loss, token_entropy, value_loss)
from icet.lppo.rollout import (PolicyWithValue, Rollout, collate, generate_samples, pieces,
                               response_tokens, sample_layers, score_samples, token_logp)
from icet.lppo.resume import intact
from icet.seeding import seed_everything

RewardFn = Callable[[list[str], list[str]], Sequence[float]]

# `layer` names the run's training layer(s) for plots (the fixed l, else the layer mode);
# `layers` lists the layer each rollout sample actually used.
METRIC_COLUMNS = ["step", "reward", "kl", "value_loss", "policy_loss", "clip_frac",
                  "value_clip_frac", "approx_kl", "entropy", "policy_grad_norm",
                  "value_grad_norm", "skipped_updates", "lr", "kl_coef", "response_length",
                  "layer", "layers"]
# One row per optimiser update (ppo_epochs x minibatches a step), in updates.csv: trl's
# approx KL 0.5 * mean((logp - logp_old)^2), the clip fractions, the mean ratio, each
# parameter group's gradient norm before its clip, and whether ratio_threshold skipped it.
UPDATE_COLUMNS = ["step", "epoch", "minibatch", "policy_loss", "value_loss", "clip_frac",
                  "value_clip_frac", "approx_kl", "entropy", "ratio", "policy_grad_norm",
                  "value_grad_norm", "skipped"]
# (wall time per step goes to the log only: metrics.csv must be byte-identical per seed)
# Keys that may differ between a checkpoint and the run resuming it: they do not change what
# the steps already taken did; nor do the speed and memory keys (batch sizes, gradient
# checkpointing: schema x-tuning, icet.lppo.config.tuning_keys).
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "keep_checkpoints"}


# --- policy ------------------------------------------------------------------------------

def lm_module_prefix(model: torch.nn.Module) -> str:
    """Dotted name of the language model inside the VLM (LLaVA: model.language_model)."""
    decoder = model.get_decoder()
    for name, module in model.named_modules():
        if module is decoder:
            return name
    raise IcetError(f"{type(model).__name__}: cannot find its language model")


def lora_target_regex(model: torch.nn.Module, target_modules: Sequence[str]) -> str:
    """A peft target regex matching the named projections inside the LM only: CLIP's towers
    have q_proj/k_proj/v_proj too, and those must stay untouched."""
    prefix = re.escape(lm_module_prefix(model))
    names = "|".join(re.escape(t) for t in target_modules)
    return rf"{prefix}\..*\.({names})"


def enable_checkpointing(model: torch.nn.Module) -> None:
    """Recompute activations in the backward pass: less memory for a 7B policy, more time.

    Non-reentrant, so LoRA's frozen base still passes gradients to the adapters.
    """
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


def build_policy(model: torch.nn.Module, params: LppoParams
                 ) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """(policy, reference). LoRA: the peft-wrapped model and None (reference = adapters off).
    Full fine-tune: the model with its LM trainable and a frozen deep copy as reference."""
    for p in model.parameters():
        p.requires_grad_(False)
    if params.full_finetune:
        import copy

        reference = copy.deepcopy(model).eval()
        prefix = lm_module_prefix(model) + "."
        for name, p in model.named_parameters():
            if name.startswith(prefix) or name.startswith("lm_head."):
                p.requires_grad_(True)
        return model, reference
    from peft import LoraConfig, get_peft_model

    lora = params.lora
    config = LoraConfig(r=int(lora["r"]), lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=lora_target_regex(model, lora["target_modules"]),
                        bias="none")
    policy = get_peft_model(model, config)
    if not any(p.requires_grad for p in policy.parameters()):
        raise IcetError(f"lppo params: lora.target_modules {lora['target_modules']} match no "
                        "module of the language model")
    return policy, None


def parameter_groups(module: PolicyWithValue) -> dict[str, list[torch.nn.Parameter]]:
    """The trainable weights as ppo_update clips them: the LM's ("policy") and the value head's."""
    return {"policy": [q for q in module.policy.parameters() if q.requires_grad],
            "value": list(module.value_head.parameters())}


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def save_policy(policy: torch.nn.Module, out: Path, processor: Any, full_finetune: bool) -> None:
    """LoRA: a peft adapter folder (safetensors). Full fine-tune: a complete model folder."""
    policy.save_pretrained(out, safe_serialization=True)
    if full_finetune:
        processor.save_pretrained(out)


def load_policy_weights(policy: torch.nn.Module, folder: Path, full_finetune: bool) -> None:
    """Put weights saved by `save_policy` back into the live policy (for resuming)."""
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise IcetError(f"{folder}: no safetensors weights to resume from")
    state = {k: v for f in files for k, v in load_file(f).items()}
    if full_finetune:
        result = policy.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise IcetError(f"{folder}: unexpected weight {result.unexpected_keys[0]}")
        return
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(policy, state)
    if getattr(result, "unexpected_keys", None):
        raise IcetError(f"{folder}: unexpected adapter weight {result.unexpected_keys[0]}")


def apply_lppo(model: torch.nn.Module, lppo_dir: str | Path, merge: bool = True) -> torch.nn.Module:
    """The model with a finished L-PPO run's LoRA on it (merged into plain weights by default)."""
    from peft import PeftModel

    adapter = Path(lppo_dir) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise IcetError(f"{adapter}: no adapter_config.json (not a LoRA L-PPO run)")
    wrapped = PeftModel.from_pretrained(model, adapter, is_trainable=False)
    return wrapped.merge_and_unload() if merge else wrapped


# --- data --------------------------------------------------------------------------------

def row_order(n_rows: int, position: int, seed: int) -> int:
    """Row index at global data `position`: one seeded permutation per pass over the data."""
    epoch, offset = divmod(position, n_rows)
    return int(np.random.default_rng([seed, epoch]).permutation(n_rows)[offset])


def reward_function(reward_fn: RewardFn | None, reward_model_dir: str | None, device: str,
                    params: LppoParams) -> RewardFn:
    """The training reward: it scores each response after `clean_response`, the same text
    the TR judge scores at evaluation (icet.score), so L-PPO optimises the measured reward."""
    from icet.judges.text import clean_response

    if reward_fn is None:
        if reward_model_dir is None:
            raise IcetError("train_lppo: give reward_fn or reward_model_dir")
        from icet.judges.reward import RewardModel

        reward_fn = RewardModel(str(reward_model_dir), device=device,
                                **params.reward_settings()).score
    scorer = reward_fn

    def cleaned(prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        return scorer(prompts, [clean_response(r) for r in responses])

    return cleaned


# --- checkpoints -------------------------------------------------------------------------

def checkpoint_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """Finished checkpoints (atomic folders), oldest first."""
    root = out_dir / "checkpoints"
    found = []
    for path in root.glob("step-*") if root.is_dir() else []:
        match = re.fullmatch(r"step-(\d+)", path.name)
        if match and (path / "state.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def rng_states() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process's RNG states as (JSON: Python's and NumPy's, tensors: torch's and CUDA's),
    so a checkpoint stores them without pickle."""
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    plain = {"python": [version, list(internal), gauss_next],
             "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)]}
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return plain, tensors


def set_rng_states(plain: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, internal, gauss_next = plain["python"]
    random.setstate((version, tuple(internal), gauss_next))
    name, keys, pos, has_gauss, cached_gaussian = plain["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(k.startswith("cuda.") for k in tensors))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_rng_states(folder: Path, states: Sequence[tuple[dict, dict]]) -> None:
    """One (rng-<process>.json, rng-<process>.safetensors) pair per process."""
    from safetensors.torch import save_file

    for process, (plain, tensors) in enumerate(states):
        write_json(folder / f"rng-{process}.json", plain)
        save_file({k: v.contiguous() for k, v in tensors.items()},
                  folder / f"rng-{process}.safetensors")


def load_rng_states(folder: Path, process: int) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    plain, tensors = folder / f"rng-{process}.json", folder / f"rng-{process}.safetensors"
    if not (plain.is_file() and tensors.is_file()):
        raise IcetError(f"{folder}: no RNG state for process {process}")
    return read_json(plain), load_file(tensors)


def input_fingerprints(model_dir: str, rt_jsonl: str, rows: list[dict],
                       reward_model_dir: str | None, reward_fn: RewardFn | None,
                       processes: int) -> dict[str, Any]:
    """What a checkpoint was made on besides its params: a resume on other inputs is refused.

    A reward function handed in by the caller (tests) has no files to hash and is recorded
    as such; the workflow always passes a reward model folder.
    """
    from icet.shards import fingerprint

    images = sorted({str(Path(rt_jsonl).parent / r["image"]) for r in rows})
    return {"model": fingerprint({}, [model_dir]),
            "rt_data": fingerprint({}, [rt_jsonl, *images]),
            "reward_model": ("reward_fn" if reward_fn is not None
                             else fingerprint({}, [reward_model_dir])),
            "processes": int(processes)}


def check_resume(ckpt: Path, state: dict, params: LppoParams, seed: int,
                 inputs: dict[str, Any]) -> None:
    """One line, before any weight is loaded, if `ckpt` cannot continue this run."""
    step = int(state["step"])
    if step > params.steps:
        raise IcetError(f"{ckpt}: checkpoint is at step {step}, past steps = {params.steps}; "
                        f"raise steps or delete {ckpt.parent} to train {params.steps} steps")
    from icet.lppo.config import tuning_keys

    now = json.loads(dumps(params.to_dict()))  # as JSON stores it (tuples -> lists)
    resumable = RESUMABLE_CHANGES | tuning_keys()
    changed = sorted(k for k in set(state["params"]) | set(now)
                     if k not in resumable and state["params"].get(k) != now.get(k))
    if state["seed"] != seed:
        changed.append("seed")
    recorded = state.get("inputs")
    if recorded is None:
        raise IcetError(f"{ckpt}: checkpoint records no input fingerprints (made by an older "
                        f"icet); delete {ckpt.parent} to start fresh")
    changed += sorted(k for k in set(recorded) | set(inputs) if recorded.get(k) != inputs.get(k))
    if changed:  # the finished steps stay: nothing here deletes a checkpoint
        raise IcetError(f"{ckpt}: checkpoint was made with different {', '.join(changed)}; "
                        f"delete {ckpt.parent} to start fresh or restore them (its {step} "
                        f"finished steps are kept: with the settings and inputs it was made "
                        f"with, a rerun writes its adapter again without training)")


def step_seed(seed: int, step: int, process: int) -> int:
    """A torch seed for one step's sampling that depends only on (seed, step, process)."""
    return int(np.random.default_rng([seed, step, process]).integers(0, 2**62))


# --- one PPO step ------------------------------------------------------------------------

def advantages_of(rollout: Rollout, scores: Sequence[float], kl_coef: float, params: LppoParams,
                  step: int) -> Rollout:
    """Fill the rollout's rewards, KL, advantages and returns."""
    rollout.scores = [float(s) for s in scores]
    rewards, kl = kl_penalised_rewards(rollout.scores, rollout.logp, rollout.logp_ref,
                                       rollout.mask, kl_coef, step=step,
                                       ids=[s.row_id for s in rollout.samples])
    advantages, returns = gae(rewards, rollout.values, rollout.mask, params.gamma, params.lam)
    if params.whiten_advantages:
        advantages = masked_whiten(advantages, rollout.mask)
    rollout.rewards, rollout.kl, rollout.advantages, rollout.returns = rewards, kl, advantages, returns
    return rollout


def clip_and_measure(accelerator: Any, parameters: list[torch.nn.Parameter], max_norm: float
                     ) -> float:
    """Clip one parameter group's gradient to `max_norm` (0: no clip); its norm before."""
    with_grad = [q for q in parameters if q.grad is not None]
    if not with_grad:
        return 0.0
    if max_norm > 0:
        return float(accelerator.clip_grad_norm_(with_grad, max_norm))
    return float(torch.linalg.vector_norm(torch.stack([q.grad.detach().norm() for q in with_grad])))


def ppo_update(wrapped: torch.nn.Module, adapter: Any, rollout: Rollout, params: LppoParams,
               optimizer: Any, scheduler: Any, accelerator: Any, rng: np.random.Generator,
               groups: dict[str, list[torch.nn.Parameter]]) -> tuple[dict[str, float], list[dict]]:
    """ppo_epochs passes of clipped updates; returns the step's token-weighted means and one
    row per update (UPDATE_COLUMNS).

    A minibatch is split into grad_accum micro-batches and those into forward `pieces` (all
    layers together where the samples carry layer rows, else one layer at a time); every
    piece's loss is weighted by its share of the minibatch's tokens, so the summed gradient
    is that of the minibatch's token-mean loss whatever the split. `groups` ("policy": the
    LM's trainable weights, "value": the head) are clipped each to max_grad_norm on its own,
    so the value head's reward-scale gradient never scales the policy's step. A minibatch
    whose mean ratio exceeds ratio_threshold (over every process) is skipped: no step.
    """
    tokenizer = getattr(adapter.processor, "tokenizer", adapter.processor)
    device = accelerator.device
    samples, mask = rollout.samples, rollout.mask
    width = mask.shape[1]
    tokens = response_tokens(samples, width, tokenizer.pad_token_id)
    micro = params.minibatch // params.grad_accum
    keys = ("policy_loss", "value_loss", "clip_frac", "value_clip_frac", "entropy", "approx_kl")
    totals = dict.fromkeys(keys, 0.0)
    seen_tokens = 0.0
    updates = []
    for epoch in range(params.ppo_epochs):
        order = rng.permutation(len(samples))
        for start in range(0, len(samples), params.minibatch):
            minibatch = [int(i) for i in order[start: start + params.minibatch]]
            n_tokens = float(mask[minibatch].sum())
            parts = [piece for m in range(0, len(minibatch), micro)
                     for piece in pieces(samples, minibatch[m: m + micro], micro)]
            sums = dict.fromkeys(keys + ("ratio",), 0.0)
            for number, (layer, part) in enumerate(parts):
                last = number == len(parts) - 1
                sync = contextlib.nullcontext() if last else accelerator.no_sync(wrapped)
                with sync:
                    batch = collate([samples[i] for i in part], width, tokenizer.pad_token_id,
                                    device, adapter.token_axes)
                    logits, values = wrapped(adapter, batch, width, layer, params.temperature)
                    m = mask[part].to(device)
                    logp = token_logp(logits, tokens[part].to(device))
                    old = rollout.logp[part].to(device)
                    pg, clip_frac = ppo_clip_loss(logp, old, rollout.advantages[part].to(device),
                                                  m, params.clip)
                    vl, v_clip = value_loss(values, rollout.values[part].to(device),
                                            rollout.returns[part].to(device), m, params.clip_value)
                    loss = pg + params.c1 * vl
                    if params.c2 > 0:
                        entropy = masked_mean(token_entropy(logits), m)
                        loss = loss - params.c2 * entropy
                    else:  # logged only: no graph for a term with weight 0
                        with torch.no_grad():
                            entropy = masked_mean(token_entropy(logits), m)
                    accelerator.backward(loss * (float(m.sum()) / n_tokens))
                piece_tokens = float(m.sum())
                with torch.no_grad():
                    diff = (logp - old).detach()
                    piece = {"policy_loss": pg, "value_loss": vl, "clip_frac": clip_frac,
                             "value_clip_frac": v_clip, "entropy": entropy,
                             "approx_kl": 0.5 * masked_mean(diff ** 2, m),
                             "ratio": masked_mean(torch.exp(diff), m)}
                for key, value in piece.items():
                    sums[key] += float(value.detach()) * piece_tokens
            # every process decides alike: the mean ratio over all of this minibatch's tokens
            ratio_tokens = accelerator.reduce(torch.tensor([sums["ratio"], n_tokens], device=device),
                                              reduction="sum").tolist()
            ratio = ratio_tokens[0] / max(ratio_tokens[1], 1.0)
            skipped = ratio > params.ratio_threshold
            norms = {f"{name}_grad_norm": clip_and_measure(accelerator, group, params.max_grad_norm)
                     for name, group in groups.items()}
            if not skipped:
                optimizer.step()
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen_tokens += n_tokens
            for key in keys:
                totals[key] += sums[key]
            updates.append({"epoch": epoch + 1, "minibatch": start // params.minibatch + 1,
                            **{key: sums[key] / max(n_tokens, 1.0) for key in keys},
                            "ratio": ratio, **norms, "skipped": int(skipped)})
    stats = {k: v / max(seen_tokens, 1.0) for k, v in totals.items()}
    stats.update({key: float(np.mean([u[key] for u in updates])) for key in
                  ("policy_grad_norm", "value_grad_norm")})
    stats["skipped_updates"] = float(sum(u["skipped"] for u in updates))
    return stats, updates


# --- the run -----------------------------------------------------------------------------

def train_lppo(model_dir: str, rt_jsonl: str, out_dir: str, params: dict, seed: int, *,
               reward_fn: RewardFn | None = None, reward_model_dir: str | None = None,
               device: str = "cpu", log: str | None = None,
               prompting: dict | None = None, num_layers: int | None = None) -> dict[str, Any]:
    """Train L-PPO on the RT prompts of `rt_jsonl`; write out_dir/{adapter/, value_head.
    safetensors, metrics.csv, lppo.json} and resume from out_dir/checkpoints if present.
    `num_layers`, the config's N for the model, must be the checkpoint's: the sweep's load
    check (load_adapter), so a wrong N stops here before any step, as it stops a sweep shard.
    Returns the final metrics row."""
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list, gather_object
    from safetensors.torch import load_file, save_file

    from icet.config import prompting_of
    from icet.models.loading import load_adapter, resolve_device
    from icet.inputs import relative_path
    from icet.runtime import cpu_kernels, stop_cleanly_on_sigterm

    logger = setup_logging(log, "lppo")
    stop_cleanly_on_sigterm()  # preempted: the last checkpoint stays, the next run resumes
    p = LppoParams.from_dict(params)
    out = Path(out_dir)
    rows = read_jsonl(rt_jsonl, required=("id", "prompt", "image"))
    if not rows:
        raise IcetError(f"{rt_jsonl}: no prompts to train on")
    for number, row in enumerate(rows, start=1):  # images inside the data set's folder only
        relative_path(row["image"], f"{rt_jsonl}: row {number} ({row['id']})")
    image_root = Path(rt_jsonl).parent
    seed_everything(seed)

    torch_device = resolve_device(device)
    on_gpu = torch_device.type == "cuda"
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision="bf16" if on_gpu else "no")
    world, rank = accelerator.num_processes, accelerator.process_index
    if not accelerator.is_main_process:
        logger.setLevel(logging.WARNING)  # one copy of the step log, not one per process

    # Hashed once, by the main process (a 7B folder is ~14 GB), for every process.
    inputs = broadcast_object_list([
        input_fingerprints(model_dir, rt_jsonl, rows, reward_model_dir, reward_fn, world)
        if accelerator.is_main_process else None])[0]
    found = intact(checkpoint_dirs(out), logger)  # a cut file: the older checkpoint, or one line
    if found:  # refuse a checkpoint of other inputs before loading anything
        check_resume(found[-1][1], read_json(found[-1][1] / "state.json"), p, seed, inputs)
    from icet.memory.jobs import check_lppo_fits

    # one line, before loading, when a step as configured cannot fit the GPU (icet memory)
    check_lppo_fits(model_dir, p.to_dict(), reward_model_dir, str(accelerator.device),
                    f"L-PPO {Path(model_dir).name}")
    # LoRA: frozen base in the loader's dtype (bf16 on a GPU), adapters in fp32 (peft's
    # autocast_adapter_dtype). Full fine-tune: fp32 master weights. bf16 autocast either way.
    # the model's system prompt / image preprocessing (config models[]), as the sweep uses
    adapter = load_adapter(model_dir, device=str(accelerator.device), num_layers=num_layers,
                           dtype="float32" if p.full_finetune else None, **prompting_of(prompting or {}))
    base = adapter.model
    if p.gradient_checkpointing:
        enable_checkpointing(base)
    policy, reference = build_policy(base, p)
    hidden = base.config.get_text_config().hidden_size
    module = PolicyWithValue(policy, hidden, p.value_trains_lm).to(accelerator.device)
    trainable = [q for q in module.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=0.0)
    warmup = p.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    wrapped, optimizer = accelerator.prepare(module, optimizer)
    unwrapped = accelerator.unwrap_model(wrapped)
    groups = parameter_groups(unwrapped)
    kl_ctl = (AdaptiveKLController(p.eta, p.target_kl, p.kl_horizon) if p.kl_mode == "adaptive"
              else FixedKLController(p.eta))
    score = reward_function(reward_fn, reward_model_dir, str(accelerator.device), p)
    fixed_layer = p.layer if p.layer is not None else adapter.default_layer

    start_step, data_pos, metrics, updates = 0, 0, [], []
    if found:
        start_step, ckpt = found[-1]
        state = read_json(ckpt / "state.json")
        load_policy_weights(unwrapped.policy, ckpt / "adapter", p.full_finetune)
        head = load_file(ckpt / "value_head.safetensors")
        unwrapped.value_head.load_state_dict(head)
        optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu",
                                             weights_only=True))
        scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=True))
        set_rng_states(*load_rng_states(ckpt, rank))
        kl_ctl.load_state_dict(state["kl_controller"])
        data_pos, metrics = int(state["data_pos"]), list(state["metrics"])
        updates = list(state.get("updates", []))
        logger.info("resuming from %s (step %d, data position %d)", ckpt, start_step, data_pos)
    logger.info("L-PPO %s: %d steps x %d prompts x %d process(es), layer_mode %s, %s, "
                "%d trainable parameters", model_dir, p.steps, p.rollout_batch, world,
                p.layer_mode, "full fine-tune" if p.full_finetune else f"LoRA r={p.lora['r']}",
                sum(q.numel() for q in groups["policy"]))

    def save_checkpoint(step: int) -> None:
        states = gather_object([rng_states()])  # every process's, in process order
        if accelerator.is_main_process:
            with atomic_dir(out / "checkpoints" / f"step-{step}") as tmp:
                save_policy(unwrapped.policy, tmp / "adapter", adapter.processor, p.full_finetune)
                save_file({k: v.detach().cpu().contiguous()
                           for k, v in unwrapped.value_head.state_dict().items()},
                          tmp / "value_head.safetensors")
                torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
                torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
                save_rng_states(tmp, states)
                write_json(tmp / "state.json", {
                    "step": step, "data_pos": data_pos, "seed": seed, "params": p.to_dict(),
                    "inputs": inputs, "kl_controller": kl_ctl.state_dict(), "metrics": metrics,
                    "updates": updates})
            for _, old in checkpoint_dirs(out)[:-p.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    bar = progress(total=p.steps, initial=start_step, desc="L-PPO",
                   **({} if accelerator.is_main_process else {"disable": True}))
    for step in range(start_step + 1, p.steps + 1):
        began = time.perf_counter()
        torch.manual_seed(step_seed(seed, step, rank))
        rng = np.random.default_rng([seed, step, rank])
        first = data_pos + rank * p.rollout_batch
        batch_rows = [rows[row_order(len(rows), first + i, seed)] for i in range(p.rollout_batch)]
        data_pos += p.rollout_batch * world
        images = [str(image_root / r["image"]) for r in batch_rows]
        layers = sample_layers(p.layer_mode, p.rollout_batch, rng, adapter.num_layers,
                               layer=fixed_layer, groups=p.groups)

        wrapped.eval()  # no dropout while sampling and scoring the rollout
        with accelerator.autocast():
            samples = generate_samples(unwrapped.policy, adapter, batch_rows, images, layers,
                                       max_new_tokens=p.max_new_tokens,
                                       temperature=p.temperature, top_k=p.top_k,
                                       device=accelerator.device)
            rollout = score_samples(unwrapped, reference, adapter, samples,
                                    temperature=p.temperature,
                                    chunk=p.minibatch // p.grad_accum, device=accelerator.device)
        scores = score([s.prompt for s in samples], [s.response for s in samples])
        kl_coef = kl_ctl.value
        advantages_of(rollout, scores, kl_coef, p, step)

        wrapped.train()
        stats, step_updates = ppo_update(wrapped, adapter, rollout, p, optimizer, scheduler,
                                         accelerator, rng, groups)
        wrapped.eval()

        kl_sum = rollout.kl.sum(dim=1)
        local = torch.tensor([float(np.mean(rollout.scores)), float(kl_sum.mean()),
                              float(rollout.mask.sum(dim=1).mean())], device=accelerator.device)
        reward, kl, length = accelerator.reduce(local, reduction="mean").tolist()
        all_layers = accelerator.gather(torch.tensor(layers, device=accelerator.device)).tolist()
        kl_ctl.update(kl, p.rollout_batch * world)
        stats = {k: float(accelerator.reduce(torch.tensor(v, device=accelerator.device),
                                             reduction="mean")) for k, v in stats.items()}
        row = {"step": step, "reward": reward, "kl": kl, "kl_coef": kl_coef,
               "layer": fixed_layer if p.layer_mode == "fixed" else p.layer_mode,
               "lr": scheduler.get_last_lr()[0], "response_length": length,
               "layers": " ".join(str(x) for x in all_layers), **stats}
        metrics.append(row)
        numbers = [k for k in UPDATE_COLUMNS if k in step_updates[0] and k not in ("epoch", "minibatch", "skipped")]
        means = accelerator.reduce(torch.tensor([[u[k] for k in numbers] for u in step_updates],
                                                device=accelerator.device), reduction="mean")
        updates += [{"step": step, "epoch": u["epoch"], "minibatch": u["minibatch"],
                     **dict(zip(numbers, values)), "skipped": u["skipped"]}
                    for u, values in zip(step_updates, means.tolist())]
        if accelerator.is_main_process:
            write_csv(out / "metrics.csv", metrics, METRIC_COLUMNS)
            write_csv(out / "updates.csv", updates, UPDATE_COLUMNS)
        logger.info("step %d/%d (%.1fs) reward %.4f kl %.4f policy %.4f value %.4f clip %.3f "
                    "approx_kl %.4f entropy %.3f skipped %d layers %s | %r -> %r", step, p.steps,
                    time.perf_counter() - began, reward, kl,
                    stats["policy_loss"], stats["value_loss"], stats["clip_frac"],
                    stats["approx_kl"], stats["entropy"], stats["skipped_updates"],
                    sorted(set(all_layers)), samples[0].prompt, samples[0].response)
        if step % p.checkpoint_every == 0 or step == p.steps:
            save_checkpoint(step)
        bar.update(1)
    bar.close()

    final = metrics[-1] if metrics else {}
    if accelerator.is_main_process:
        import peft
        import transformers

        with atomic_dir(out / "adapter") as tmp:
            save_policy(unwrapped.policy, tmp, adapter.processor, p.full_finetune)
        with atomic_path(out / "value_head.safetensors") as tmp_file:
            save_file({k: v.detach().cpu().contiguous()
                       for k, v in unwrapped.value_head.state_dict().items()}, tmp_file)
        # Always, not only when no step ran: a rerun resumed from the final checkpoint (its
        # outputs deleted by Snakemake, e.g. after a params change) runs no step, and its
        # metrics are the checkpoint's.
        write_csv(out / "metrics.csv", metrics, METRIC_COLUMNS)
        write_csv(out / "updates.csv", updates, UPDATE_COLUMNS)
        write_json(out / "lppo.json", {
            "model_dir": str(model_dir), "rt_jsonl": str(rt_jsonl), "seed": seed,
            "steps": p.steps, "params": p.to_dict(), "final_metrics": final,
            "policy": "full" if p.full_finetune else "lora",
            "default_layer": adapter.default_layer, "num_layers": adapter.num_layers,
            "processes": world, "reward": "reward_fn" if reward_fn else str(reward_model_dir),
            "kernel": cpu_kernels(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__}})
    accelerator.wait_for_everyone()
    logger.info("L-PPO done: %s", out)
    return final


def train_lppo_job(model_dir: str, rt_jsonl: str, out_dir: str, *, params: dict,
                   reward_model_dir: str, reward: dict | None = None, seed: int = 0,
                   device: str = "auto", threads: int = 1, log: str | None = None,
                   prompting: dict | None = None, num_layers: int | None = None) -> dict[str, Any]:
    """The workflow's entry (rule lppo_train): `reward` is the config's judge entry, whose
    batch_size / max_length / input_format the reward function uses unless params set them
    (so L-PPO optimises the reward that TR measures, written the same way)."""
    torch.set_num_threads(max(1, int(threads)))
    merged = dict(params)
    for key, param in (("batch_size", "reward_batch_size"), ("max_length", "reward_max_length"),
                       ("input_format", "reward_input_format")):
        if merged.get(param) is None and (reward or {}).get(key) is not None:
            merged[param] = reward[key]  # null in the lppo block: the judge's
    return train_lppo(model_dir, rt_jsonl, out_dir, merged, seed,
                      reward_model_dir=reward_model_dir, device=device, log=log, prompting=prompting,
                      num_layers=num_layers)


def main(argv: Sequence[str] | None = None) -> None:
    """usage: accelerate launch -m icet.lppo.trainer MODEL_DIR RT_JSONL OUT_DIR PARAMS_JSON SEED
    REWARD_MODEL_DIR [LOG]
       or: torchrun --standalone --nproc-per-node N -m icet.lppo.trainer --job JOB_JSON
    (JOB_JSON: train_lppo_job's arguments, written by icet.lppo.launch)"""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 2 and args[0] == "--job":
        job = read_json(args[1])
        train_lppo_job(job.pop("model_dir"), job.pop("rt_jsonl"), job.pop("out_dir"), **job)
        return
    if len(args) not in (6, 7):
        raise SystemExit(main.__doc__)
    model_dir, rt_jsonl, out_dir, params_json, seed, reward_model_dir = args[:6]
    train_lppo(model_dir, rt_jsonl, out_dir, read_json(params_json), int(seed),
               reward_model_dir=reward_model_dir, device="auto",
               log=args[6] if len(args) > 6 else None)


if __name__ == "__main__":
    try:
        main()
    except IcetError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2)
