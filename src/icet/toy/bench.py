"""The toy benchmark: the naive ICET loop against the fast engine on the toy organism.

    python -m icet.toy.bench --model-dir resources/toy/organism/safety --dataset resources/toy/data/ac.jsonl

Both engines sweep the same shard (prompts x layers) in one process. The naive engine runs
twice: one sequence per `generate` call (the obvious loop, batch 1: the reference the
speedup is measured against) and batched (`--naive-batch-size`, what the sweep's `naive`
option does); the table ends with `speedup: X.XX` (naive batch-1 seconds / fast seconds)
and a line with the speedup over batched generate, so neither number hides the other. Then the fast engine alone at x1, x2, x4
the prompts and at fewer layers shows how its time grows. Without --model-dir a random
toy-architecture model is built (EOS is then rare, so responses run to max_new_tokens and
the token count is fixed); without --dataset, toy prompts over noise images. (The GPU
benches, on models of the paper's sizes: icet.bench.)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_MODEL = Path("resources/toy/organism/safety")
DEFAULT_DATASET = Path("resources/toy/data/ac.jsonl")


def build_random_toy(out_dir: Path, seed: int = 0) -> Path:
    """A random-weight toy-architecture LLaVA (toy tokenizer and processor), saved to `out_dir`."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from icet.toy.organism import build_processor, toy_llava_config
    from icet.toy.world import vocabulary
    from icet.word_tokenizers import build_word_tokenizer

    tokenizer = build_word_tokenizer(vocabulary(), out_dir)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(toy_llava_config(None, tokenizer)).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    build_processor(out_dir).save_pretrained(out_dir)
    return out_dir


def noise_dataset(n: int, seed: int = 0) -> tuple[list[str], list[Any]]:
    """`n` toy-vocabulary prompts with deterministic noise images."""
    import numpy as np
    from PIL import Image

    from icet.toy.world import example_texts

    rng = np.random.default_rng(seed)
    texts = [t for t in example_texts() if len(t.split()) <= 16]
    prompts = [texts[int(rng.integers(len(texts)))] for _ in range(n)]
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
    return prompts, images


def _timed(adapter, prompts, images, layers, engine: str, args) -> tuple[float, dict]:
    from icet.engine import sweep_layers
    from icet.seeding import seed_everything

    seed_everything(0)
    started = time.perf_counter()
    results = sweep_layers(adapter, prompts, images, layers, engine=engine,
                           max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                           naive_batch_size=args.naive_batch_size)
    return time.perf_counter() - started, results


def _tokens(results: dict) -> int:
    return sum(r["n_response_tokens"] for rows in results.values() for r in rows)


def bench_sweep(args: argparse.Namespace) -> int:
    import torch

    from icet.models.loading import load_adapter
    from icet.runtime import configure
    from icet.rows import read_dataset

    configure(args.threads)
    os.environ.setdefault("ICET_NO_PROGRESS", "1")
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model_dir or (DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
        if model_dir is None:
            model_dir = build_random_toy(Path(scratch) / "random-toy")
            label = "random toy-architecture LLaVA (from configs)"
        else:
            label = str(model_dir)
        adapter = load_adapter(model_dir, device=args.device)
        dataset = args.dataset or (DEFAULT_DATASET if DEFAULT_DATASET.is_file() else None)
        if dataset is not None:
            rows, images = read_dataset(dataset)
            prompts = [r["prompt"] for r in rows]
        else:
            prompts, images = noise_dataset(args.prompts or 60)
        if args.prompts:
            prompts, images = prompts[:args.prompts], images[:args.prompts]
        layers = (list(range(adapter.num_layers + 1)) if args.layers == "all"
                  else [int(x) for x in args.layers.split(",")])
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
              f"torch threads {torch.get_num_threads()}, device {adapter.device}, python {platform.python_version()}, "
              f"torch {torch.__version__}")
        print(f"model: {label}; data: {dataset or 'noise images'}; max_new_tokens {args.max_new_tokens}; "
              f"fast batch_size {args.batch_size}; naive batch_size {args.naive_batch_size}")

        if args.scaling:
            print("\nfast engine scaling")
            print(f"{'prompts':>8} {'layers':>7} {'rows':>6} {'fast s':>8} {'s/row':>8} {'tokens/s':>9}")
            base = min(args.scale_prompts, len(prompts))
            prompts_s, images_s = prompts[:base], images[:base]
            steps = [(m, layers) for m in (1, 2, 4)]
            steps += [(4, layers[:k]) for k in sorted({1, max(1, len(layers) // 2)}) if k < len(layers)]
            for mult, some in steps:
                seconds, results = _timed(adapter, prompts_s * mult, images_s * mult, some, "fast", args)
                n_rows = base * mult * len(some)
                print(f"{base * mult:>8} {len(some):>7} {n_rows:>6} {seconds:>8.2f} "
                      f"{seconds / n_rows:>8.4f} {_tokens(results) / seconds:>9.0f}")

        print(f"\n{'engine':>9} {'prompts':>8} {'layers':>7} {'seconds':>8} {'tokens':>7} {'tokens/s':>9}")
        runs = [("naive", 1), ("naive", args.naive_batch_size), ("fast", args.naive_batch_size)]
        times, outputs = {}, {}
        for engine, naive_batch in runs:
            label = engine if engine == "fast" else f"naive/{naive_batch}"
            args.naive_batch_size, kept = naive_batch, args.naive_batch_size
            times[label], outputs[label] = _timed(adapter, prompts, images, layers, engine, args)
            args.naive_batch_size = kept
            print(f"{label:>9} {len(prompts):>8} {len(layers):>7} {times[label]:>8.2f} "
                  f"{_tokens(outputs[label]):>7} {_tokens(outputs[label]) / times[label]:>9.0f}")
        same = all(result == outputs["fast"] for result in outputs.values())
        print(f"identical responses: {'yes' if same else 'NO'}")
        batched = f"naive/{args.naive_batch_size}"
        print(f"speedup over batched generate ({batched}): {times[batched] / times['fast']:.2f}")
        print(f"speedup: {times['naive/1'] / times['fast']:.2f}")
        return 0 if same else 1


def add_arguments(sweep: argparse.ArgumentParser) -> None:
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
    parser = argparse.ArgumentParser(prog="python -m icet.toy.bench",
                                     description="naive vs fast ICET sweep on one toy shard")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from icet.errors import IcetError

    try:
        return bench_sweep(args)
    except IcetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
