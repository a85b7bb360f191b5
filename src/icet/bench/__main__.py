"""Command line of the benchmarks (see icet.bench):

    python -m icet.bench sweep --model-dir resources/toy/organism/safety --dataset resources/toy/data/ac.jsonl
    python -m icet.bench gpu-sweep
    python -m icet.bench lppo-step --gradient-checkpointing
    python -m icet.bench memory [--size scaled --device cpu]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from icet.bench import gpu_sweep, lppo_step, memory
from icet.bench.toy_sweep import DEFAULT_DATASET, DEFAULT_MODEL


def add_sweep_arguments(sweep: argparse.ArgumentParser) -> None:
    sweep.add_argument("--model-dir", type=Path, help=f"a LLaVA folder (default {DEFAULT_MODEL} if present, "
                       "else a random toy-architecture model)")
    sweep.add_argument("--dataset", type=Path, help=f"a data set JSONL (default {DEFAULT_DATASET} if present)")
    sweep.add_argument("--prompts", type=int, default=0, help="use the first N prompts (0 = all; 60 if generated)")
    sweep.add_argument("--layers", default="all", help="'all' or a comma list of ICET layers")
    sweep.add_argument("--max-new-tokens", type=int, default=32, help="the toy profile's generation length")
    sweep.add_argument("--batch-size", default="auto", type=lambda v: v if v == "auto" else int(v),
                       help="fast engine rows per batch, or auto")
    sweep.add_argument("--naive-batch-size", type=int, default=16, help="prompts per generate call (naive)")
    sweep.add_argument("--threads", type=int, default=2, help="torch threads (the CI machine has 2 cores)")
    sweep.add_argument("--device", default="cpu")
    sweep.add_argument("--scale-prompts", type=int, default=15,
                       help="prompts at x1 in the scaling table (then x2, x4 and fewer layers at x4)")
    sweep.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip the scaling table")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icet.bench", description="ICET benchmarks (see icet.bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sweep_arguments(sub.add_parser("sweep", help="naive vs fast ICET sweep on one toy shard"))
    gpu_sweep.add_arguments(sub.add_parser("gpu-sweep", help="naive vs fast engine on a random LLaVA-1.5-7B"))
    lppo_step.add_arguments(sub.add_parser("lppo-step", help="one L-PPO step on a random LLaVA-1.5-7B, LoRA"))
    memory.add_arguments(sub.add_parser("memory", help="the memory model's predictions beside measured peaks"))
    args = parser.parse_args(argv)
    from icet.errors import IcetError

    try:
        if args.command == "sweep":
            from icet.bench.toy_sweep import bench_sweep

            return bench_sweep(args)
        if args.command == "gpu-sweep":
            gpu_sweep.bench_gpu_sweep(args)
        elif args.command == "memory":
            memory.bench_memory(args)
        else:
            lppo_step.bench_lppo_step(args)
        return 0
    except IcetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
