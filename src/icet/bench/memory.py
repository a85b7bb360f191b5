"""`memory`: the memory model's predictions beside measured peaks, case by case.

    python -m icet.bench memory                                # on a GPU: full-size random models
    python -m icet.bench memory --size scaled --device cpu     # the same cases at scaled sizes

Each case runs the job's own code on a random model (icet.bench.vlm7b's LLaVA-1.5, icet.bench
.mllama11b's Llama-3.2-Vision, Llama/GPT-2 judges built from icet.memory.paper's configs) and
compares icet.memory's prediction of the activations (everything beyond the weights, which
are loaded before the measurement starts) with the measured peak: CUDA's
max_memory_allocated on a GPU, the CPU allocator's peak (icet.memory.measure) on a CPU.

- sweep: the fast engine (`fast_sweep`) with `auto` batching under a fixed budget, short and
  long prompts: rows, vision sub-batch and the peak phase as planned;
- lppo-update: one micro-batch of L-PPO's update (LoRA r 16 on q/k/v/o, forward of policy
  and value head, clipped losses, backward), with and without gradient checkpointing;
- lppo-rollout: generate over a rollout batch (one call for every sample);
- judge: Llama Guard's generate and the GPT-2 reward model's forward.

Prints a table, then one JSON line with every number. tests/memory runs the scaled cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from typing import Any, Callable

# Cases at each size: (rows budget in GB beyond the weights, prompts, words per prompt).
SWEEP_CASES = {
    "scaled": [("llava", 0.060, 16, 16), ("llava", 0.120, 8, 160), ("mllama", 0.040, 12, 16),
               ("mllama", 0.110, 8, 160)],
    "full": [("llava", 40.0, 64, 16), ("llava", 40.0, 32, 600), ("mllama", 40.0, 64, 16),
             ("mllama", 40.0, 32, 600)],
}
UPDATE_CASES = {"scaled": (4, 48), "full": (4, 128)}  # (micro-batch rows, response tokens)


def measure(device: Any) -> Callable[[Callable[[], Any]], int]:
    """A function that runs `fn` and returns its peak bytes allocated above the start."""
    import torch

    if device.type != "cuda":
        from icet.memory.measure import cpu_peak

        return lambda fn: cpu_peak(fn)[0]

    def cuda_peak(fn: Callable[[], Any]) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - start)

    return cuda_peak


def builders(kind: str) -> Any:
    from icet.bench import mllama11b, vlm7b

    return {"llava": vlm7b, "mllama": mllama11b}[kind]


def model_size(kind: str, size: str) -> str:
    return size if size == "scaled" else {"llava": "7b", "mllama": "11b"}[kind]


def sweep_cases(size: str, device: Any, dtype: Any, work: str, peak: Callable) -> list[dict]:
    import torch

    from icet.engine import fast_sweep
    from icet.memory.model import sweep_estimate

    rows = []
    for kind in ("llava", "mllama"):
        module = builders(kind)
        adapter = module.build_adapter(model_size(kind, size), str(device), dtype, work)
        arch = adapter.memory_arch()
        layers = [0, adapter.num_layers // 2, adapter.num_layers]
        for case_kind, budget_gb, n, words in SWEEP_CASES[size]:
            if case_kind != kind:
                continue
            prompts, images = module.bench_inputs(adapter, n)
            prompts = [" ".join((p.split() * words)[:words]) for p in prompts]
            budget = int(budget_gb * 1e9)
            from icet.engine import plan_batch

            planned, vision = plan_batch("auto", adapter, prompts, layers, 16, budget)
            measured = peak(lambda: fast_sweep(adapter, prompts, images, layers, max_new_tokens=16,
                                               batch_size="auto", memory_budget=budget))
            positions = max(adapter.prompt_positions(prompts))
            group = max(1, min(len(layers), planned // n))
            estimate = sweep_estimate(arch, rows=planned, vision_batch=vision or planned,
                                      prompt_positions=positions, max_new_tokens=16, layers=group,
                                      b=torch.tensor([], dtype=dtype).element_size())
            rows.append({"case": f"sweep {kind} {words} words", "rows": planned, "vision_batch": vision,
                         "budget": budget, "predicted": estimate.peak_phase.bytes, "measured": measured,
                         "phase": estimate.peak_phase.name})
        del adapter
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def update_micro_step(adapter: Any, micro: int, response: int, checkpointing: bool,
                      layer: int = 1) -> tuple[Callable[[], None], int, Any, dict]:
    """One micro-batch of L-PPO's update on `adapter`'s model (LoRA r 16 on q/k/v/o, the
    policy and value head forward, clipped policy and value losses, entropy, backward), all
    `micro` samples at `layer` (the batched step's memory does not depend on which layers).
    Returns (the step, prompt positions, the policy, the prepared inputs); the step runs
    under bf16 autocast on a GPU, as train_lppo's accelerator does."""
    import torch

    from icet.bench import vlm7b
    from icet.lppo.config import LppoParams
    from icet.lppo.losses import masked_mean, ppo_clip_loss, token_entropy, value_loss
    from icet.lppo.rollout import PolicyWithValue, Sample, collate, response_tokens, token_logp
    from icet.lppo.trainer import build_policy, enable_checkpointing

    device = adapter.device
    params = LppoParams.from_dict({"rollout_batch": micro, "minibatch": micro, "layer_mode": "uniform",
                                   "max_new_tokens": response,
                                   "lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                                            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}})
    if checkpointing:
        enable_checkpointing(adapter.model)
    policy, _ = build_policy(adapter.model, params)
    hidden = adapter.model.config.text_config.hidden_size
    module = PolicyWithValue(policy, hidden, False).to(device).train()
    prompts, images = vlm7b.bench_inputs(adapter, micro)
    inputs = adapter.prepare(prompts, images)
    vocab = adapter.model.config.text_config.vocab_size
    generator = torch.Generator().manual_seed(0)
    samples = [Sample(row_id=str(i), prompt=prompts[i], layer=layer,
                      prompt_ids=inputs["input_ids"][i][inputs["attention_mask"][i].bool()].cpu(),
                      extra={"pixel_values": inputs["pixel_values"][i].cpu()},
                      response_ids=torch.randint(10, vocab - 8, (response,), generator=generator))
               for i in range(micro)]
    pad = adapter.processor.tokenizer.pad_token_id
    batch = collate(samples, response, pad, device)
    tokens = response_tokens(samples, response, pad).to(device)
    ones = torch.ones(micro, response, device=device)
    zeros = torch.zeros(micro, response, device=device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def step() -> None:
        with autocast:
            logits, values = module(adapter, batch, response, layer, 1.0)
            pg, _ = ppo_clip_loss(token_logp(logits, tokens), zeros - 5, ones, ones, 0.2)
            vl, _ = value_loss(values, zeros, ones, ones, 0.2)
            loss = pg + 0.1 * vl - 0.01 * masked_mean(token_entropy(logits), ones)
        loss.backward()

    return step, batch["input_ids"].shape[1] - response, policy, inputs


def lppo_cases(size: str, device: Any, dtype: Any, work: str, peak: Callable) -> list[dict]:
    import torch

    from icet.bench import vlm7b
    from icet.memory.model import decoder_generate_phases, lppo_update_terms

    rows, (micro, response) = [], UPDATE_CASES[size]
    on_gpu = device.type == "cuda"
    b = torch.tensor([], dtype=dtype).element_size()
    for checkpointing in (False, True):
        adapter = vlm7b.build_adapter(model_size("llava", size), str(device), dtype, work)
        step, prompt, policy, inputs = update_micro_step(adapter, micro, response, checkpointing)
        measured = peak(step)
        terms = lppo_update_terms(adapter.memory_arch(), micro, prompt, response,
                                  "bf16" if on_gpu else "fp32", checkpointing, b)
        rows.append({"case": f"lppo update{' (checkpointing)' if checkpointing else ''}",
                     "rows": micro, "predicted": sum(terms.values()), "measured": measured,
                     "phase": "update"})
        if not checkpointing:  # the rollout: one generate over every sample
            vocab = adapter.model.config.text_config.vocab_size
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu
                        else contextlib.nullcontext())
            policy.eval()
            with torch.no_grad(), autocast:
                measured = peak(lambda: policy.generate(
                    **inputs, **adapter.feature_kwargs(1), do_sample=True, max_new_tokens=response,
                    eos_token_id=vocab, pad_token_id=adapter.processor.tokenizer.pad_token_id))
            width = inputs["input_ids"].shape[1]
            predicted = max(p.bytes for p in decoder_generate_phases(adapter.memory_arch(), micro, width,
                                                                     response, b))
            rows.append({"case": "lppo rollout (generate)", "rows": micro, "predicted": predicted,
                         "measured": measured, "phase": "rollout"})
        del adapter, policy, step
        if on_gpu:
            torch.cuda.empty_cache()
    return rows


JUDGE_SCALE = {"hidden_size": 512, "intermediate_size": 1792, "num_hidden_layers": 4,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 8000}


def judge_cases(size: str, device: Any, dtype: Any, peak: Callable) -> list[dict]:
    import torch
    import transformers

    from icet.memory.arch import arch_of
    from icet.memory.model import judge_estimate
    from icet.memory.paper import config_of

    rows = []
    guard = config_of("meta-llama/Llama-Guard-3-8B")
    reward = config_of("Ray2333/gpt2-large-harmless-reward_model")
    if size == "scaled":
        guard.update(JUDGE_SCALE)
        reward.update(n_embd=320, n_layer=6, n_head=5, vocab_size=8000)
    generator = torch.Generator().manual_seed(0)
    for config, batch, positions, new, b, kind in ((guard, 8, 600 if size == "scaled" else 1700, 20,
                                                    torch.tensor([], dtype=dtype).element_size(), "guard"),
                                                   (reward, 16, 512, 0, 4, "reward")):
        arch = arch_of(config)
        model_config = transformers.AutoConfig.for_model(**config)
        with torch.device(device):
            if kind == "guard":
                model = transformers.LlamaForCausalLM._from_config(model_config, dtype=dtype)
            else:
                model_config.pad_token_id = 0
                model = transformers.GPT2ForSequenceClassification._from_config(model_config, dtype=torch.float32)
        model.eval()
        ids = torch.randint(10, arch.text.vocab if arch.text else 8000, (batch, positions),
                            generator=generator).to(device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            if kind == "guard":
                measured = peak(lambda: model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                                       max_new_tokens=new, min_new_tokens=new,
                                                       pad_token_id=0))
            else:
                measured = peak(lambda: model(input_ids=ids, attention_mask=mask))
        estimate = judge_estimate(arch, rows=batch, positions=positions, new_tokens=new, b=b, what=kind)
        rows.append({"case": f"judge {kind}", "rows": batch, "predicted": estimate.peak_phase.bytes,
                     "measured": measured, "phase": estimate.peak_phase.name})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_memory(args: argparse.Namespace) -> list[dict]:
    import torch

    from icet.models.loading import resolve_device, resolve_dtype
    from icet.runtime import configure

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype or "bfloat16", device)
    if device.type == "cpu":
        configure(args.threads)
    peak = measure(device)
    started = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as work:
        if "sweep" in args.cases:
            rows += sweep_cases(args.size, device, dtype, work, peak)
        if "lppo" in args.cases:
            rows += lppo_cases(args.size, device, dtype if device.type == "cuda" else torch.float32,
                               work, peak)
    if "judges" in args.cases:
        rows += judge_cases(args.size, device, dtype, peak)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; size {args.size}; "
          f"{time.perf_counter() - started:.0f} s")
    print(f"{'case':<34} {'rows':>5} {'predicted GB':>13} {'measured GB':>12} {'ratio':>6}  peak phase")
    for row in rows:
        row["ratio"] = row["predicted"] / max(1, row["measured"])
        print(f"{row['case']:<34} {row['rows']:>5} {row['predicted'] / 1e9:>13.3f} "
              f"{row['measured'] / 1e9:>12.3f} {row['ratio']:>6.3f}  {row['phase']}")
    print(json.dumps({"bench": "memory", "device": name, "size": args.size, "cases": rows}))
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=("full", "scaled"), default="full",
                        help="full-size random models (a GPU), or scaled-down ones (a CPU)")
    parser.add_argument("--device", default="auto", help="'auto' = the GPU if there is one")
    parser.add_argument("--dtype", default=None, help="default bf16 (the GPU jobs' dtype)")
    parser.add_argument("--cases", default="sweep,lppo,judges", type=lambda v: v.split(","),
                        help="comma list of sweep, lppo, judges")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
