"""The ICET sweep: one model x variant x test set x layer shard of responses.

Sharding by layer means a preempted job loses one shard, and the Snakemake DAG can spread
layers over GPUs. Rows keep the data set's order and carry every data set key, so the
scorer and the report never need the data set again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from icet import shards
# Both engines (the naive per-layer loop `respond` and the fast engine) live in icet.engine,
# which never imports this module.
from icet.engine import check_engine, fast_sweep, respond, supports_fast
from icet.runtime import resolve_device
from icet.errors import IcetError
from icet.io import sha256_file, write_jsonl
from icet.lengths import check_dataset
from icet.logs import setup_logging
from icet.models.base import VLMAdapter
from icet.rows import VARIANTS, read_dataset, response_row
from icet.seeding import seed_everything



def check_layer_arg(layer: Any) -> int:
    """Snakemake wildcards arrive as strings: accept "7" and 7, nothing else."""
    if isinstance(layer, bool):
        raise IcetError(f"layer {layer!r} is not an integer")
    if isinstance(layer, int):
        return layer
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        return int(layer)
    raise IcetError(f"layer {layer!r} is not an integer")


def _check_settings(variant: str, max_new_tokens: int) -> None:
    if variant not in VARIANTS:
        raise IcetError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if int(max_new_tokens) < 1:
        raise IcetError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _load(model_dir, peft_adapter, device, model_name, layers, logger,
          prompting: dict | None = None, num_layers: int | None = None) -> VLMAdapter:
    from icet.config import prompting_of
    from icet.models.loading import load_adapter

    started = time.perf_counter()
    adapter = load_adapter(model_dir, peft_adapter=peft_adapter, device=resolve_device(device),
                           name=model_name, num_layers=num_layers, **prompting_of(prompting or {}))
    for layer in layers:
        adapter.check_layer(layer)  # every layer, before any generation
    logger.info("loaded %s (%s) in %.1fs: %s", model_name, model_dir,
                time.perf_counter() - started, adapter.info)
    return adapter


def with_prompt_suffix(rows: list[dict], suffix: str) -> list[dict]:
    """Rows whose prompt carries the test set's evaluation suffix (config `prompt_suffix`,
    e.g. LLaVA's VQA instruction): the prompt sent is the prompt recorded and judged."""
    if not isinstance(suffix, str):
        raise IcetError(f"prompt_suffix: must be a string, got {suffix!r}")
    return [dict(r, prompt=r["prompt"] + suffix) for r in rows] if suffix else rows


def _records(rows: list[dict], responses: list[dict], layer: int, *, model_name: str,
             variant: str, testset: str, seed: int) -> list[dict]:
    """Data-set rows joined with their ICET-`layer` responses (icet.rows.response_row), in order."""
    return [response_row(row, response, model=model_name, variant=variant, testset=testset,
                         layer=layer, seed=seed) for row, response in zip(rows, responses)]


def _shard_rows(adapter: VLMAdapter, rows: list[dict], images: list[Path], layer: int, *,
                model_name: str, variant: str, testset: str, max_new_tokens: int,
                batch_size: int, seed: int, logger) -> list[dict]:
    """ICET-`layer` responses for every data-set row, as response rows (docs/contracts.md)."""
    logger.info("sweep %s/%s/%s ICET-%d: %d prompts, max_new_tokens=%d, batch_size=%d, seed=%d",
                model_name, variant, testset, layer, len(rows), max_new_tokens, batch_size, seed)
    started = time.perf_counter()
    responses = respond(adapter, [r["prompt"] for r in rows], images, layer,
                        max_new_tokens=int(max_new_tokens), batch_size=int(batch_size),
                        logger=logger)
    shard = _records(rows, responses, layer, model_name=model_name, variant=variant,
                     testset=testset, seed=seed)
    logger.info("ICET-%d: %d responses in %.1fs (%d finished before max_new_tokens)", layer,
                len(shard), time.perf_counter() - started, sum(r["finished"] for r in shard))
    return shard


def run_sweep_shard(model_dir: str | os.PathLike, dataset: str | os.PathLike, layer: int | str,
                    out: str | os.PathLike, *, model_name: str, variant: str, testset: str,
                    max_new_tokens: int, batch_size: int,
                    peft_adapter: str | os.PathLike | None = None,
                    seed: int = 0, device: str = "cpu", prompting: dict | None = None,
                    prompt_suffix: str = "",
                    log: str | os.PathLike | None = None) -> None:
    """Generate ICET-`layer` responses for every row of `dataset` and write them to `out` (JSONL).

    `prompting`: the model's system_prompt / image_preprocessing config entries."""
    logger = setup_logging(log, "sweep")
    layer = check_layer_arg(layer)
    _check_settings(variant, max_new_tokens)
    rows, images = read_dataset(dataset, testset)
    rows = with_prompt_suffix(rows, prompt_suffix)
    seed_everything(seed)
    adapter = _load(model_dir, peft_adapter, device, model_name, [layer], logger, prompting)
    shard = _shard_rows(adapter, rows, images, layer, model_name=model_name, variant=variant,
                        testset=testset, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        seed=seed, logger=logger)
    write_jsonl(out, shard)
    logger.info("wrote %d responses to %s", len(shard), out)


def shard_settings(model_dir: str | os.PathLike, *, model_name: str, variant: str,
                   testset: str, seed: int, max_new_tokens: int, device: str, engine: str,
                   batch_size: int, engine_batch_size: int | str,
                   peft_adapter: str | os.PathLike | None = None) -> dict[str, Any]:
    """Everything besides input files that decides a shard's bytes (its fingerprint's settings).

    The hash of the sweep's library code (shards.SWEEP_CODE), the torch/transformers (and
    peft, with an adapter) versions, the resolved device and dtype and the image processor's
    class and backend. On CPU in fp32 the fast and naive engines and every batch size give
    the same tokens (tests/models/test_sweep.py), so they are left out and switching them keeps
    shards; anywhere else (bf16 on a GPU) padding and kernel choice move logits, so the
    engine and its batch size setting are in. "auto" is recorded as "auto": the rows it
    resolves to depend on free GPU memory, which no fingerprint can pin.
    """
    import torch
    import transformers

    from icet import __version__
    from icet.models.loading import image_processor_of, resolve_device, resolve_dtype

    torch_device = resolve_device(device)  # "auto" -> cuda if visible, as _load does
    dtype = resolve_dtype(None, torch_device)  # what load_adapter picks for this device
    settings: dict[str, Any] = {
        "model": model_name, "variant": variant, "testset": testset, "seed": int(seed),
        "max_new_tokens": int(max_new_tokens), "icet": __version__,
        "code": shards.code_hash(), "torch": torch.__version__,
        "transformers": transformers.__version__, "device": torch_device.type,
        "dtype": str(dtype).removeprefix("torch."), **image_processor_of(model_dir)}
    if peft_adapter is not None:
        import peft

        settings["peft"] = peft.__version__
    if torch_device.type != "cpu" or dtype != torch.float32:
        settings["engine"] = engine
        settings["batch_size"] = batch_size if engine == "naive" else engine_batch_size
    return settings


def run_sweep_job(model_dir: str | os.PathLike, dataset: str | os.PathLike, layers: list[int],
                  index: str | os.PathLike, *, model_name: str, variant: str, testset: str,
                  max_new_tokens: int, batch_size: int,
                  peft_adapter: str | os.PathLike | None = None,
                  engine: str = "fast", engine_batch_size: int | str = "auto",
                  seed: int = 0, device: str = "cpu", threads: int | None = None,
                  prompting: dict | None = None, prompt_suffix: str = "",
                  num_layers: int | None = None,
                  log: str | os.PathLike | None = None) -> list[int]:
    """Sweep several layers with one model load: one resumable shard per layer (icet.shards).

    Shards already finished with the same fingerprint (data, model, adapter, settings, code,
    libraries, device: `shard_settings`) are kept untouched; the rest are generated and
    written atomically, each as soon as its layer is done (the fast engine finishes layers
    group by group). `engine` is "fast" (icet.engine; `engine_batch_size` rows per batch) or
    "naive" (`batch_size` prompts per generate call). `index` (the job's declared output) is
    written last. `prompting` holds the model's system_prompt / image_preprocessing config
    entries (in the fingerprint: they change what the model sees). `prompt_suffix` is
    appended to every prompt (config `prompt_suffix`; in the fingerprint). `num_layers`, the
    config's N for the model, must be the checkpoint's (load_adapter). Returns the layers
    computed now.
    """
    from icet.config import prompting_of

    from icet.runtime import configure

    configure(threads)
    logger = setup_logging(log, "sweep")
    layers = [check_layer_arg(layer) for layer in layers]
    _check_settings(variant, max_new_tokens)
    check_engine(engine)
    rows, images = read_dataset(dataset, testset)
    rows = with_prompt_suffix(rows, prompt_suffix)
    check_dataset(model_dir, dataset, rows, max_new_tokens)  # before any weight is loaded
    out_dir = Path(index).parent
    settings = shard_settings(model_dir, model_name=model_name, variant=variant, testset=testset,
                              seed=seed, max_new_tokens=max_new_tokens, device=device,
                              engine=engine, batch_size=batch_size,
                              engine_batch_size=engine_batch_size, peft_adapter=peft_adapter)
    settings["prompting"] = prompting_of(prompting or {})
    if prompt_suffix:  # only when set, so shards swept without one keep their fingerprint
        settings["prompt_suffix"] = prompt_suffix
    key = shards.fingerprint(
        settings,
        [dataset, model_dir, peft_adapter] + sorted({str(p) for p in images}))
    todo = [layer for layer in layers if not shards.is_done(out_dir, layer, key)]
    logger.info("%s/%s/%s: %d of %d layer shards to compute (%s kept)", model_name, variant,
                testset, len(todo), len(layers), sorted(set(layers) - set(todo)) or "none")
    if todo:
        from icet.memory.jobs import check_sweep_fits

        # one line, before loading, when even one row of a long prompt cannot fit the GPU
        check_sweep_fits(model_dir, int(max_new_tokens), resolve_device(device), f"{model_name} sweep")
        adapter = _load(model_dir, peft_adapter, device, model_name, todo, logger, prompting,
                        num_layers)
        prompts = [r["prompt"] for r in rows]
        started = time.perf_counter()

        def write(layer: int, responses: list[dict]) -> None:
            """One finished layer: its shard, atomically, then its done-marker."""
            shard = _records(rows, responses, layer, model_name=model_name, variant=variant,
                             testset=testset, seed=seed)
            write_jsonl(shards.shard_path(out_dir, layer), shard)
            shards.mark_done(out_dir, layer, key)
            logger.info("ICET-%d: %d responses written at %.1fs (%d finished before "
                        "max_new_tokens)", layer, len(shard), time.perf_counter() - started,
                        sum(r["finished"] for r in shard))

        if engine == "naive" or not supports_fast(adapter):
            logger.info("engine: naive (%s), batch_size=%d, max_new_tokens=%d, seed=%d",
                        "as configured" if engine == "naive" else f"{adapter.name} has no fast path",
                        batch_size, max_new_tokens, seed)
            for layer in todo:
                seed_everything(seed)  # each shard's bytes depend on nothing computed before it
                write(layer, respond(adapter, prompts, images, layer, max_new_tokens=int(max_new_tokens),
                                     batch_size=int(batch_size), logger=logger))
        else:
            logger.info("engine: fast, batch_size=%s, max_new_tokens=%d, seed=%d",
                        engine_batch_size, max_new_tokens, seed)
            seed_everything(seed)  # greedy decoding: nothing random, seeded all the same
            fast_sweep(adapter, prompts, images, todo, max_new_tokens=int(max_new_tokens),
                       batch_size=engine_batch_size, on_layer=write, logger=logger)
    shards.write_index(index, out_dir, layers, inputs=swept_inputs(dataset, images))
    return todo


def swept_inputs(dataset: str | os.PathLike, images: list[Path]) -> dict[str, dict[str, str]]:
    """The data set and every image a job's shards were made from, with their sha256: the
    index records them, so an image changed after the sweep is seen (icet.shards.index_problems)
    although no rule declares images as inputs."""
    return {"data": {Path(dataset).as_posix(): sha256_file(dataset)},
            "images": {p.as_posix(): sha256_file(p) for p in sorted(set(images))}}
