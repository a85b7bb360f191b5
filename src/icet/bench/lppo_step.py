"""`lppo-step`: one L-PPO step (rollout + PPO update) on a random LLaVA-1.5-7B with LoRA.

    python -m icet.bench lppo-step [--gradient-checkpointing]      # on the device machine
    python -m icet.bench lppo-step --size tiny --device cpu         # the same code in seconds

The step is train_lppo's own loop body, built from icet.lppo's functions (build_policy,
PolicyWithValue, generate_samples, score_samples, advantages_of, ppo_update) under the same
Accelerator settings (bf16 autocast on a GPU, base weights bf16, LoRA weights fp32): only
loading and checkpointing are left out. The reward model is a tiny random GPT-2 sequence
classifier through icet.judges.reward.RewardModel; its cost is negligible beside the 7B.
Hyperparameters are the toy profile's (toy/toy.yaml `lppo`) unless overridden, with layers
drawn uniformly over 0..N, so one rollout mixes layers as the paper's groups mode does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

GIB = 2**30

# toy/toy.yaml's lppo block (tests/workflow/test_bench_gpu.py keeps the two in step).
TOY_LPPO: dict[str, Any] = {
    "rollout_batch": 64, "minibatch": 32, "ppo_epochs": 2, "lr": 2.0e-4, "eta": 0.1,
    "kl_mode": "fixed", "target_kl": 4.0, "max_new_tokens": 24,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
}


def tiny_reward_model(tokenizer: Any, out_dir: Path, max_length: int, seed: int = 0) -> Path:
    """A random 2-layer GPT-2 sequence classifier (one label) over `tokenizer`, saved as a judge folder."""
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=max_length, n_embd=64, n_layer=2,
                        n_head=2, num_labels=1, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    GPT2ForSequenceClassification(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def bench_lppo_step(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch
    from accelerate import Accelerator

    from icet.bench.gpu_sweep import device_tools
    from icet.bench.vlm7b import bench_inputs, build_adapter
    from icet.judges.reward import RewardModel
    from icet.lppo.config import LppoParams
    from icet.lppo.losses import AdaptiveKLController, FixedKLController
    from icet.lppo.rollout import PolicyWithValue, generate_samples, sample_layers, score_samples
    from icet.lppo.trainer import (advantages_of, build_policy, enable_checkpointing,
                                   parameter_groups, ppo_update)
    from icet.models.loading import resolve_device, resolve_dtype
    from icet.runtime import configure

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    if not on_gpu:
        configure(args.threads)
    overrides = {k: v for k, v in (("rollout_batch", args.rollout_batch), ("minibatch", args.minibatch),
                                   ("ppo_epochs", args.ppo_epochs), ("max_new_tokens", args.max_new_tokens),
                                   ("grad_accum", args.grad_accum)) if v is not None}
    p = LppoParams.from_dict({**TOY_LPPO, **overrides, "layer_mode": args.layer_mode,
                              "gradient_checkpointing": args.gradient_checkpointing})
    sync, reset_peak, peak = device_tools(device)
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision="bf16" if on_gpu else "no")
    with tempfile.TemporaryDirectory() as work:
        # As train_lppo: the frozen base in the loader's dtype (bf16 on a GPU), LoRA in fp32.
        adapter = build_adapter(args.size, str(accelerator.device), resolve_dtype(None, device),
                                Path(work) / "tokenizer", seed=args.seed)
        rm = p.reward_settings()
        reward = RewardModel(str(tiny_reward_model(adapter.processor.tokenizer, Path(work) / "reward",
                                                   rm["max_length"], args.seed)),
                             device=str(accelerator.device), **rm)
    base = adapter.model
    if p.gradient_checkpointing:
        enable_checkpointing(base)
    policy, reference = build_policy(base, p)
    module = PolicyWithValue(policy, base.config.get_text_config().hidden_size,
                             p.value_trains_lm).to(accelerator.device)
    trainable = [q for q in module.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    wrapped, optimizer = accelerator.prepare(module, optimizer)
    unwrapped = accelerator.unwrap_model(wrapped)
    groups = parameter_groups(unwrapped)
    kl_ctl = (AdaptiveKLController(p.eta, p.target_kl, p.kl_horizon) if p.kl_mode == "adaptive"
              else FixedKLController(p.eta))
    weights_gib = sum(q.numel() * q.element_size() for q in unwrapped.parameters()) / GIB

    prompts, images = bench_inputs(adapter, p.rollout_batch, seed=args.seed)
    rows = [{"id": f"bench-{i}", "prompt": prompt} for i, prompt in enumerate(prompts)]
    rng = np.random.default_rng(args.seed)
    layers = sample_layers(p.layer_mode, p.rollout_batch, rng, adapter.num_layers,
                           layer=adapter.default_layer, groups=p.groups)
    torch.manual_seed(args.seed)
    times: dict[str, float] = {}
    reset_peak()
    sync()
    began = last = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal last
        sync()
        now = time.perf_counter()
        times[name], last = now - last, now

    wrapped.eval()
    with accelerator.autocast():
        samples = generate_samples(unwrapped.policy, adapter, rows, images, layers,
                                   max_new_tokens=p.max_new_tokens, temperature=p.temperature,
                                   top_k=p.top_k, device=accelerator.device,
                                   across_layers=False if args.split_layers else None)
        lap("rollout_s")
        rollout = score_samples(unwrapped, reference, adapter, samples, temperature=p.temperature,
                                chunk=p.minibatch // p.grad_accum, device=accelerator.device)
        lap("score_s")
    scores = reward.score([s.prompt for s in samples], [s.response for s in samples])
    lap("reward_s")
    advantages_of(rollout, scores, kl_ctl.value, p, step=1)
    wrapped.train()
    stats, _ = ppo_update(wrapped, adapter, rollout, p, optimizer, scheduler, accelerator, rng, groups)
    wrapped.eval()
    lap("update_s")
    step_s = time.perf_counter() - began
    peak_gib = peak() / GIB

    n_trainable = sum(q.numel() for q in groups["policy"])
    tokens = int(rollout.mask.sum())
    print(f"device: {torch.cuda.get_device_name(device) if on_gpu else 'cpu'}; torch {torch.__version__}; "
          f"base {str(adapter.dtype).removeprefix('torch.')}, "
          f"{'bf16 autocast' if on_gpu else 'fp32'}; attention {base.config._attn_implementation}")
    print(f"model: {adapter.name}, {weights_gib:.2f} GiB of weights; LoRA r={p.lora['r']} on "
          f"{', '.join(p.lora['target_modules'])}: {n_trainable} trainable parameters")
    print(f"step: {p.rollout_batch} rollouts x {p.max_new_tokens} tokens, minibatch {p.minibatch}, "
          f"grad_accum {p.grad_accum}, {p.ppo_epochs} PPO epochs, layers {sorted(set(layers))}, "
          f"gradient checkpointing {'on' if p.gradient_checkpointing else 'off'}, "
          f"{'across layers' if samples[0].across_layers else 'split by layer'}")
    print("times: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in times.items()))
    print(f"step time: {step_s:.2f} s; peak memory: {peak_gib:.2f} GiB; response tokens {tokens}; "
          f"policy loss {stats['policy_loss']:.4f}, value loss {stats['value_loss']:.4f}")
    summary = {"bench": "lppo-step", "size": args.size, "device": str(device),
               "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
               "weights_gib": weights_gib, "trainable_params": n_trainable,
               "rollout_batch": p.rollout_batch, "minibatch": p.minibatch, "grad_accum": p.grad_accum,
               "ppo_epochs": p.ppo_epochs, "max_new_tokens": p.max_new_tokens,
               "gradient_checkpointing": p.gradient_checkpointing, "layers": layers,
               "across_layers": samples[0].across_layers,
               "response_tokens": tokens, "step_s": step_s, **times, "peak_gib": peak_gib,
               "policy_loss": stats["policy_loss"], "value_loss": stats["value_loss"],
               "torch": torch.__version__}
    print(json.dumps(summary, default=float))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from icet.bench.vlm7b import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute activations in the backward pass (less memory, more time)")
    parser.add_argument("--layer-mode", choices=("uniform", "fixed"), default="uniform",
                        help="rollout layers: uniform over 0..N, or the default layer N-1")
    parser.add_argument("--split-layers", action="store_true",
                        help="one generate / forward per layer, as before L-PPO batched across layers")
    parser.add_argument("--rollout-batch", type=int, help=f"default {TOY_LPPO['rollout_batch']} (toy profile)")
    parser.add_argument("--minibatch", type=int, help=f"default {TOY_LPPO['minibatch']} (toy profile)")
    parser.add_argument("--grad-accum", type=int, help="micro-batches per minibatch (default 1)")
    parser.add_argument("--ppo-epochs", type=int, help=f"default {TOY_LPPO['ppo_epochs']} (toy profile)")
    parser.add_argument("--max-new-tokens", type=int, help=f"default {TOY_LPPO['max_new_tokens']} (toy profile)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    parser.add_argument("--seed", type=int, default=0)
