"""Command line of the benchmarks (see icet.bench; the toy's sweep bench: icet.toy.bench):

    python -m icet.bench gpu-sweep
    python -m icet.bench lppo-step --gradient-checkpointing
    python -m icet.bench memory [--size scaled --device cpu]
"""

from __future__ import annotations

import argparse
import sys

from icet.bench import gpu_sweep, lppo_step, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m icet.bench", description="ICET benchmarks (see icet.bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    gpu_sweep.add_arguments(sub.add_parser("gpu-sweep", help="naive vs fast engine on a random LLaVA-1.5-7B"))
    lppo_step.add_arguments(sub.add_parser("lppo-step", help="one L-PPO step on a random LLaVA-1.5-7B, LoRA"))
    memory.add_arguments(sub.add_parser("memory", help="the memory model's predictions beside measured peaks"))
    args = parser.parse_args(argv)
    from icet.errors import IcetError

    try:
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
