"""`gpu-sweep`: naive vs fast ICET engine on a random LLaVA-1.5-7B, and the decode step's HBM roofline.

    python -m icet.bench gpu-sweep                 # on the device machine (docs/performance.md)
    python -m icet.bench gpu-sweep --size tiny --device cpu   # the same code path in seconds

Both engines sweep the same prompts x layers in one process, after a short warm-up of each
(CUDA kernels, cuBLAS handles), with every response forced to max_new_tokens (vlm7b's EOS).
Tokens/s and peak memory per engine, then the decode step alone: one batch of the fast
engine's size is decoded by the engine's own `decode` to two response lengths, and
the difference over the difference in steps is the time of one step, prefill cancelled.
What a step must read (LM weights + the KV cache of every row) over that time, against
`--hbm-gbs`, is its fraction of the memory-bandwidth roofline. The last line is one JSON
object with every number, for pasting.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from typing import Any, Callable

GIB = 2**30
H100_SXM_HBM_GBS = 3350.0  # H100 SXM5 80 GB, HBM3 (NVIDIA datasheet); PCIe: 2000; H200: 4800


def spread_layers(num_layers: int) -> list[int]:
    """Four ICET layers across the encoder, the default layer (N-1) included."""
    return sorted({0, num_layers // 3, 2 * num_layers // 3, num_layers - 1})


def device_tools(device: Any) -> tuple[Callable[[], None], Callable[[], None], Callable[[], float]]:
    """(synchronise, reset peak memory, peak memory in bytes) for `device`.

    On a CPU the peak is the process's maximum resident set (it cannot be reset), so the CPU
    numbers only show that the code path runs.
    """
    import torch

    if device.type == "cuda":
        return (lambda: torch.cuda.synchronize(device), lambda: torch.cuda.reset_peak_memory_stats(device),
                lambda: float(torch.cuda.max_memory_allocated(device)))
    import resource

    return (lambda: None, lambda: None,
            lambda: float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024)


def engine_run(adapter: Any, prompts: list, images: list, layers: list[int], engine: str,
               args: argparse.Namespace, naive_batch: int, sync: Callable[[], None]) -> tuple[float, dict]:
    from icet.engine import sweep_layers

    sync()
    started = time.perf_counter()
    results = sweep_layers(adapter, prompts, images, layers, engine=engine,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           naive_batch_size=naive_batch)
    sync()
    return time.perf_counter() - started, results


def decode_step(adapter: Any, prompts: list, images: list, layer: int, rows: int, short: int,
                long: int, sync: Callable[[], None], repeats: int = 3) -> dict[str, float]:
    """Seconds per greedy decode step of `rows` rows (layer-`layer` features), prefill excluded:
    the difference of a long and a short decode, each the fastest of `repeats`. On a busy
    CPU with a tiny model the difference can still come out <= 0; the roofline is then NaN."""
    import torch

    from icet.engine import decode

    picked = [i % len(prompts) for i in range(rows)]
    inputs, embeds = adapter.layer_embeddings([prompts[i] for i in picked], [images[i] for i in picked],
                                              [layer])
    mask = inputs["attention_mask"]
    never = adapter.eos_token_ids
    times = {}
    for steps in (short, long):
        for _ in range(repeats):  # the fastest of a few: the run least disturbed by others
            sync()
            started = time.perf_counter()
            decoded = decode(adapter, embeds[layer], mask, steps, never)
            sync()
            times[steps] = min(times.get(steps, math.inf), time.perf_counter() - started)
            if any(len(tokens) != steps for tokens, _ in decoded):
                raise RuntimeError("a row stopped early: EOS must be an id the model cannot emit")
    del embeds
    if adapter.device.type == "cuda":
        torch.cuda.empty_cache()
    # Steps short+1..long are the extra ones; their mean context is halfway through them.
    step_s = (times[long] - times[short]) / (long - short)
    return {"rows": rows, "prompt_width": int(mask.shape[1]), "step_s": step_s,
            "context": mask.shape[1] + (short + long) / 2}


def bench_gpu_sweep(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from icet.bench.vlm7b import bench_inputs, build_adapter, decode_bytes_per_step
    from icet.engine import plan_batch
    from icet.models.loading import resolve_device, resolve_dtype
    from icet.runtime import configure

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cpu":
        configure(args.threads)
    sync, reset_peak, peak = device_tools(device)
    with tempfile.TemporaryDirectory() as work:
        sync()
        started = time.perf_counter()
        adapter = build_adapter(args.size, str(device), dtype, work, seed=args.seed)
        sync()
        build_s = time.perf_counter() - started
    params = sum(p.numel() for p in adapter.model.parameters())
    weights_gib = sum(p.numel() * p.element_size() for p in adapter.model.parameters()) / GIB
    layers = (spread_layers(adapter.num_layers) if args.layers == "spread"
              else list(range(adapter.num_layers + 1)) if args.layers == "all"
              else [int(x) for x in args.layers.split(",")])
    prompts, images = bench_inputs(adapter, args.prompts, seed=args.seed)
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}; "
          f"torch {torch.__version__}; dtype {str(dtype).removeprefix('torch.')}; attention "
          f"{adapter.model.config._attn_implementation}")
    print(f"model: {adapter.name}, {params / 1e9:.3f} B parameters, {weights_gib:.2f} GiB, "
          f"built in {build_s:.1f} s (random init on the device, nothing loaded)")
    print(f"sweep: {len(prompts)} prompts x layers {layers}, {args.max_new_tokens} new tokens per "
          f"response (EOS unreachable), fast batch_size {args.batch_size}")

    # Warm-up: first kernel launches and allocator growth would otherwise bill the first engine.
    warm = argparse.Namespace(**{**vars(args), "max_new_tokens": 2})
    for engine in ("naive", "fast"):
        engine_run(adapter, prompts[:2], images[:2], layers[:1], engine, warm, 2, sync)

    runs = [(f"naive/{b}", "naive", b) for b in args.naive_batch_sizes] + [("fast", "fast", 0)]
    engines: dict[str, dict[str, float]] = {}
    outputs = {}
    print(f"\n{'engine':>9} {'rows':>6} {'seconds':>8} {'tokens':>8} {'tokens/s':>9} {'peak GiB':>9}")
    for label, engine, naive_batch in runs:
        reset_peak()
        seconds, outputs[label] = engine_run(adapter, prompts, images, layers, engine, args,
                                             naive_batch or 1, sync)
        tokens = sum(r["n_response_tokens"] for rows in outputs[label].values() for r in rows)
        engines[label] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds,
                          "peak_gib": peak() / GIB}
        print(f"{label:>9} {len(prompts) * len(layers):>6} {seconds:>8.2f} {tokens:>8} "
              f"{tokens / seconds:>9.1f} {engines[label]['peak_gib']:>9.2f}")
    speedups = {label: engines[label]["seconds"] / engines["fast"]["seconds"]
                for label in engines if label != "fast"}
    for label, value in speedups.items():
        print(f"speedup over {label}: {value:.2f}")
    # bf16 on a GPU: batch shape changes kernels, so greedy ties can break differently.
    pairs = [(a, b) for label in engines if label != "fast"
             for layer in layers for a, b in zip(outputs[label][layer], outputs["fast"][layer])]
    same = sum(a["response"] == b["response"] for a, b in pairs) / max(1, len(pairs))
    print(f"responses identical to the naive engine's: {100 * same:.1f} %")

    rows = min(plan_batch(args.batch_size, adapter, prompts, layers, args.max_new_tokens)[0],
               len(prompts) * len(layers))
    short = max(1, min(args.decode_short, args.max_new_tokens - 1))
    reset_peak()
    step = decode_step(adapter, prompts, images, adapter.default_layer, rows, short,
                       args.max_new_tokens, sync)
    weight_bytes, kv_bytes = decode_bytes_per_step(adapter, rows, step["context"])
    achieved = (weight_bytes + kv_bytes) / step["step_s"] / 1e9 if step["step_s"] > 0 else math.nan
    fraction = achieved / args.hbm_gbs
    print(f"\ndecode step ({rows} rows, fast engine's batch; context {step['context']:.0f} positions): "
          f"{1e3 * step['step_s']:.2f} ms; reads {weight_bytes / 1e9:.2f} GB weights + "
          f"{kv_bytes / 1e9:.2f} GB KV = {achieved:.0f} GB/s; "
          f"HBM roofline fraction {fraction:.3f} (of {args.hbm_gbs:.0f} GB/s)")
    summary = {
        "bench": "gpu-sweep", "size": args.size, "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(dtype).removeprefix("torch."), "params_b": params / 1e9,
        "weights_gib": weights_gib, "build_s": build_s, "prompts": len(prompts), "layers": layers,
        "max_new_tokens": args.max_new_tokens, "engines": engines, "speedup": speedups,
        "identical_share": same,
        "decode": {**step, "weight_gb": weight_bytes / 1e9, "kv_gb": kv_bytes / 1e9,
                   "achieved_gbs": achieved, "hbm_gbs": args.hbm_gbs, "roofline_fraction": fraction,
                   "tokens_per_s": rows / step["step_s"] if step["step_s"] > 0 else math.nan},
        "torch": torch.__version__,
    }
    print(json.dumps(summary, default=float))
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from icet.bench.vlm7b import add_model_arguments

    add_model_arguments(parser)
    parser.add_argument("--dtype", default=None, help="default bf16 on a GPU, fp32 on a CPU")
    parser.add_argument("--prompts", type=int, default=64, help="prompts (64 x 4 layers: < 5 min on one H100)")
    parser.add_argument("--layers", default="spread",
                        help="'spread' (0, N/3, 2N/3, N-1), 'all', or a comma list of ICET layers")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="every response runs this long")
    parser.add_argument("--batch-size", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="fast engine rows per batch, or auto (from free GPU memory)")
    parser.add_argument("--naive-batch-sizes", default=[16], type=lambda v: [int(x) for x in v.split(",")],
                        help="comma list: prompts per generate call of each naive run (1 = the obvious loop)")
    parser.add_argument("--decode-short", type=int, default=16,
                        help="the shorter response length of the decode-step difference")
    parser.add_argument("--hbm-gbs", type=float, default=H100_SXM_HBM_GBS,
                        help="peak memory bandwidth in GB/s (H100 SXM 3350, H100 PCIe 2000, H200 4800)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU")
    parser.add_argument("--seed", type=int, default=0)
