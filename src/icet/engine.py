"""The ICET sweep engines: the naive loop, and the fast one (one encoder pass for every layer,
many (prompt, layer) rows decoded together).

The naive loop (`respond`, engine "naive") calls `generate` per layer: it reruns the vision
encoder for every layer and decodes one layer's batch at a time. In the fast engine the vision
tower runs once per image per layer group with all hidden states, every layer's features go
through the frozen projector, and the (prompt, layer) rows are decoded as one left-padded
batch with a KV cache, greedily, dropping rows from the batch once a quarter of it reached
EOS (each drop copies the cache; a finished row decodes on meanwhile, ignored). With greedy
fp32 decoding the responses are token-identical to the naive loop's (tests/models/test_engine.py).

An adapter opts in with `supports_fast_sweep = True` and the fast-sweep members of
icet.models.base.VLMAdapter: `layer_embeddings(prompts, images, layers) -> (inputs, {layer:
inputs_embeds})`, `embed_tokens(ids)`, `lm_forward(inputs_embeds, attention_mask,
position_ids, cache) -> logits` and `new_cache()`. Any other adapter runs the naive loop,
whatever the engine setting. Both engines live here; icet.sweep imports them, never the
reverse.

An architecture whose image reaches the LM other than through `inputs_embeds` (Mllama:
cross-attention states and a per-token cross-attention mask) returns, per layer, a dict
`{"inputs_embeds": ..., name: per-row tensor, ...}` instead; the engine stacks every entry
along the row axis as it does the embeddings, passes the extras to every `lm_forward` call
as keywords, and drops finished rows from them as from the cache; those the adapter names
in `prefill_only_inputs` (Mllama's vision states, cached by its cross-attention) are
dropped after the prefill.

Memory: "auto" sizes the batch with the memory model (icet.memory) for the longest row of
the data set (its prompt positions plus max_new_tokens), and the vision encoder runs on
sub-batches the model sizes too (it holds every layer's state of the images it runs). The
KV cache is preallocated at the first decode step for the rest of the response
(`PreallocatedLayer`): no concatenation per step.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from icet.errors import IcetError
from icet.logs import progress
from icet.models.base import Generation, row_inputs_of

ENGINES = ("fast", "naive")
# Rows decoded together on a CPU under "auto": past ~256 rows a toy decode step is compute
# bound and larger batches only add padding (docs/performance.md).
CPU_AUTO_ROWS = 256
MAX_AUTO_ROWS = 1024  # beyond this a GPU step is bandwidth bound on the KV cache anyway
# Of the memory free once the model is loaded, what "auto" plans to fill: the memory model
# counts allocated bytes (validated within 15 % on CPU runs, docs/performance.md); the rest
# covers the caching allocator's fragmentation, cuBLAS workspaces and the model's error.
MEMORY_SHARE = 0.85

# Finished rows are dropped from a decode batch (a copy of its whole KV cache) once they make
# up 1/COMPACT_SHARE of it, not one EOS at a time: at most ~COMPACT_SHARE copies a batch.
COMPACT_SHARE = 4

# "auto" rows on a GPU for an architecture the memory model does not know: fits a 7B LLaVA in
# bf16 on one GPU with 576 image tokens per prompt.
GPU_FALLBACK_ROWS = 16

LayerDone = Callable[[int, list[dict[str, Any]]], None]


def respond(adapter: Any, prompts: list[str], images: list[Any], layer: int, *,
            max_new_tokens: int, batch_size: int, logger: Any = None) -> list[dict[str, Any]]:
    """Layer-l responses to (prompt, image) pairs, in order, generated in batches.

    Returns the response fields only (response, n_prompt_tokens, n_response_tokens,
    finished); the caller adds provenance.
    """
    adapter.check_layer(layer)
    if batch_size < 1:
        raise IcetError(f"batch_size must be >= 1, got {batch_size}")
    results: list[dict[str, Any]] = []
    if len(prompts) != len(images):
        raise IcetError(f"{len(prompts)} prompts but {len(images)} images")
    bar = progress(total=len(prompts), desc=f"{adapter.name} ICET-{layer}", unit="prompt")
    for start in range(0, len(prompts), batch_size):
        batch = slice(start, start + batch_size)
        generations = adapter.generate(prompts[batch], images[batch],
                                       layer=layer, max_new_tokens=max_new_tokens)
        results.extend(generation.sweep_fields() for generation in generations)
        bar.update(len(generations))
        if logger is not None:
            logger.info("ICET-%d: %d/%d prompts", layer, len(results), len(prompts))
    bar.close()
    return results


def supports_fast(adapter: Any) -> bool:
    """Whether `adapter` implements the fast engine's members (else the naive loop runs)."""
    return bool(getattr(adapter, "supports_fast_sweep", False))


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise IcetError(f"sweep engine {engine!r} is not one of {', '.join(ENGINES)}")
    return engine


def check_batch_size(batch_size: int | str) -> int | str:
    if batch_size != "auto" and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                 or batch_size < 1):
        raise IcetError(f"sweep batch_size must be an integer >= 1 or 'auto', got {batch_size!r}")
    return batch_size


def free_bytes(device: torch.device) -> int:
    """Memory free for activations on `device` now: the GPU's (the model already loaded), or
    on a CPU the host's available physical memory."""
    import os

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def plan_batch(batch_size: int | str, adapter: Any, prompts: list[str], layers: list[int],
               max_new_tokens: int, memory_budget: int | None = None) -> tuple[int, int | None]:
    """(rows per decode batch, images per vision pass) for sweeping `prompts` at `layers`.

    "auto": the most rows whose predicted peak (icet.memory.sweep_plan), at the longest
    prompt of all plus max_new_tokens, fits MEMORY_SHARE of the free memory (`free_bytes`),
    at most MAX_AUTO_ROWS (CPU_AUTO_ROWS on a CPU); an integer is taken as given. The vision
    sub-batch is sized the same way for the rows chosen. `memory_budget` (bytes beyond the
    weights) replaces the free-memory figure. An architecture the memory model does not know
    (Qwen2.5-VL, whose image token counts vary with the image) gets, under "auto",
    CPU_AUTO_ROWS on a CPU and GPU_FALLBACK_ROWS on a GPU, with one vision pass a batch.
    """
    from icet.memory.model import sweep_plan

    check_batch_size(batch_size)
    try:
        arch = adapter.memory_arch()
    except IcetError:
        if batch_size != "auto":
            return int(batch_size), None
        return (GPU_FALLBACK_ROWS if adapter.device.type == "cuda" else CPU_AUTO_ROWS), None
    positions = max(adapter.prompt_positions(prompts)) if prompts else 1
    cap = MAX_AUTO_ROWS if adapter.device.type == "cuda" else CPU_AUTO_ROWS
    budget = (int(memory_budget) if memory_budget is not None
              else int(free_bytes(adapter.device) * MEMORY_SHARE))
    plan = sweep_plan(arch, budget=budget, prompt_positions=positions, max_new_tokens=max_new_tokens,
                      n_prompts=len(prompts), layers=len(layers), dtype_bytes=adapter_dtype_bytes(adapter),
                      rows=None if batch_size == "auto" else int(batch_size), max_rows=cap,
                      where=adapter.name)
    return plan.rows, plan.vision_batch


def adapter_dtype_bytes(adapter: Any) -> int:
    return torch.tensor([], dtype=adapter.dtype).element_size()


def preallocated_layer_class() -> type:
    """A transformers DynamicLayer that stops concatenating (built lazily: transformers loads
    on first use). The prefill's keys and values are kept as they come; the first decode
    step moves them into buffers with room for `room` more positions, and every later step
    writes its position in place. Attention reads views of the filled part: the same values
    and shapes DynamicLayer's torch.cat would give, without a new cache tensor a step.
    A layer updated only once (Mllama's cross-attention) keeps its prefill tensors."""
    global _LAYER_CLASS
    if _LAYER_CLASS is not None:
        return _LAYER_CLASS
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, room: int):
            super().__init__()
            self.room = max(1, int(room))
            self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.keys, self.values = key_states, value_states
                return self.keys, self.values
            filled, new = self.keys.shape[-2], key_states.shape[-2]
            if self.buffers is None or filled + new > self.buffers[0].shape[-2]:
                capacity = filled + max(new, self.room)
                grown = []
                for old in (self.keys, self.values):
                    buffer = old.new_empty((*old.shape[:-2], capacity, old.shape[-1]))
                    buffer[..., :filled, :] = old
                    grown.append(buffer)
                self.buffers = (grown[0], grown[1])
            keys, values = self.buffers
            keys[..., filled:filled + new, :] = key_states
            values[..., filled:filled + new, :] = value_states
            self.keys, self.values = keys[..., :filled + new, :], values[..., :filled + new, :]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.buffers is None:
                super().batch_select_indices(indices)
                return
            filled = self.keys.shape[-2]
            self.buffers = (self.buffers[0][indices], self.buffers[1][indices])
            self.keys, self.values = self.buffers[0][..., :filled, :], self.buffers[1][..., :filled, :]

    _LAYER_CLASS = PreallocatedLayer
    return PreallocatedLayer


_LAYER_CLASS: type | None = None


def preallocate(cache: Any, room: int) -> Any:
    """`cache` (a transformers DynamicCache) with its plain layers preallocating (see
    `preallocated_layer_class`); other layer kinds (sliding windows) are left as they are."""
    from transformers.cache_utils import DynamicLayer

    layer_class = preallocated_layer_class()
    cache.layers = [layer_class(room) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def decode(adapter: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
           max_new_tokens: int, eos_ids: set[int], row_inputs: dict[str, torch.Tensor] | None = None,
           choose: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[tuple[list[int], bool]]:
    """Responses (token ids up to and including EOS, finished) of left-padded rows, each
    token `choose(logits [rows, vocab])`: greedy (argmax) unless given (L-PPO samples).

    Position ids skip the left padding and the mask grows by one column a step, as in
    `generate`; a row that emits EOS stops generating, and finished rows leave the batch
    (with their KV cache and `row_inputs`, the adapter's extra per-row model inputs) once
    they are 1/COMPACT_SHARE of it: each leaving copies the whole cache, so not at every EOS
    (meanwhile a finished row decodes on, ignored, as in `generate`). `row_inputs` is consumed: the
    adapter's prefill-only inputs are popped from it after the prefill, so a caller that
    hands over its only reference frees them (and `inputs_embeds`) for the decode.
    """
    row_inputs = row_inputs if row_inputs is not None else {}
    rows = inputs_embeds.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    alive = torch.arange(rows)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = preallocate(adapter.new_cache(), max_new_tokens - 1)
    eos = torch.tensor(sorted(eos_ids), device=inputs_embeds.device)
    with torch.inference_mode():
        logits = adapter.lm_forward(inputs_embeds, mask, positions, cache, **row_inputs)
        del inputs_embeds
        for name in getattr(adapter, "prefill_only_inputs", ()):
            row_inputs.pop(name, None)
        extras = dict(row_inputs)
        row_inputs.clear()
        live = [True] * rows  # per batch position: still generating
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1) if choose is None else choose(logits)
            done = torch.isin(chosen, eos)
            for pos, (row, token, stop) in enumerate(zip(alive.tolist(), chosen.tolist(), done.tolist())):
                if live[pos]:
                    tokens[row].append(token)
                    finished[row] = stop
                    live[pos] = not stop
            if step == max_new_tokens - 1 or not any(live):
                break
            if live.count(False) >= max(1, len(live) // COMPACT_SHARE):
                keep = torch.tensor([pos for pos, on in enumerate(live) if on], device=chosen.device)
                cache.batch_select_indices(keep)
                alive, mask, chosen = alive[keep.cpu()], mask[keep], chosen[keep]
                positions = positions[keep]
                extras = {name: value[keep] for name, value in extras.items()}
                live = [True] * len(keep)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            positions = positions[:, -1:] + 1
            logits = adapter.lm_forward(adapter.embed_tokens(chosen[:, None]), mask, positions, cache,
                                        **extras)
    return list(zip(tokens, finished))


def stack_rows(per_layer: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch of every layer's rows, entry by entry; each layer's own copy is released as
    soon as it is stacked (the list is emptied), so the inputs exist once, not twice."""
    stacked = {}
    for name in list(per_layer[0]):
        stacked[name] = torch.cat([rows.pop(name) for rows in per_layer])
    per_layer.clear()
    return stacked


def _result(adapter: Any, prompt_ids: list[int], response: list[int], finished: bool) -> dict[str, Any]:
    """The sweep's response fields, exactly as the naive loop (`respond`) writes them."""
    return Generation(text=adapter.response_text(response), prompt_ids=prompt_ids,
                      response_ids=response, finished=finished).sweep_fields()


def plan_groups(n_prompts: int, layers: list[int], rows: int) -> list[list[int]]:
    """Layer groups of about `rows` (prompt, layer) rows: a group's shards are written together.

    A job killed mid-group loses only that group's layers, so groups are as small as the
    batch allows: one layer when a layer alone fills the batch.
    """
    size = max(1, min(len(layers), rows // max(1, n_prompts)))
    return [layers[i:i + size] for i in range(0, len(layers), size)]


def fast_sweep(adapter: Any, prompts: list[str], images: list[Any], layers: list[int], *,
               max_new_tokens: int, batch_size: int | str = "auto", on_layer: LayerDone | None = None,
               logger: Any = None, memory_budget: int | None = None) -> dict[int, list[dict[str, Any]]]:
    """Every layer's responses to the (prompt, image) pairs, in order; `on_layer` as each
    layer completes. `memory_budget`: bytes the batches may use beyond the weights (None:
    the device's free memory, `plan_batch`)."""
    if len(prompts) != len(images):
        raise IcetError(f"{len(prompts)} prompts but {len(images)} images")
    for layer in layers:
        adapter.check_layer(layer)
    eos_ids = adapter.eos_token_ids
    # Sized for the longest row of all (the memory model), whichever batch it falls in.
    rows, vision_batch = plan_batch(batch_size, adapter, prompts, layers, max_new_tokens, memory_budget)
    if logger is not None:
        logger.info("fast engine: %d rows per batch, vision encoder on %s images at a time "
                    "(batch_size %s)", rows, vision_batch or "all", batch_size)
    # Prompts of similar length share a batch: less left padding to run through the LM.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, list[dict[str, Any]]] = {}
    bar = progress(total=len(prompts) * len(layers), desc=f"{adapter.name} ICET fast", unit="row")
    for group in plan_groups(len(prompts), layers, rows):
        done: dict[int, list[Any]] = {layer: [None] * len(prompts) for layer in group}
        chunk = max(1, rows // len(group))  # prompts per batch: each brings one row per layer
        for start in range(0, len(prompts), chunk):
            stop = min(len(prompts), start + chunk)
            picked = order[start:stop]
            inputs, embeds = adapter.layer_embeddings([prompts[i] for i in picked],
                                                      [images[i] for i in picked], group,
                                                      vision_batch=vision_batch)
            mask = inputs["attention_mask"]
            prompt_ids = [ids[keep.bool()].tolist() for ids, keep in zip(inputs["input_ids"].cpu(), mask.cpu())]
            del inputs  # pixels: not needed past the vision pass
            stacked = stack_rows([row_inputs_of(embeds.pop(layer)) for layer in group])
            decoded = decode(adapter, stacked.pop("inputs_embeds"), mask.repeat(len(group), 1),
                                    max_new_tokens, eos_ids, row_inputs=stacked)
            for k, (response, finished) in enumerate(decoded):
                layer, i = group[k // (stop - start)], k % (stop - start)
                done[layer][picked[i]] = _result(adapter, prompt_ids[i], response, finished)
            bar.update(len(decoded))
        for layer in group:
            results[layer] = done[layer]
            if logger is not None:
                logger.info("ICET-%d: %d prompts (fast engine, %d rows per batch)", layer, len(prompts), rows)
            if on_layer is not None:
                on_layer(layer, results[layer])
    bar.close()
    return results


def sweep_layers(adapter: Any, prompts: list[str], images: list[Any], layers: list[int], *,
                 engine: str = "fast", max_new_tokens: int, batch_size: int | str = "auto",
                 naive_batch_size: int = 16, on_layer: LayerDone | None = None,
                 logger: Any = None) -> dict[int, list[dict[str, Any]]]:
    """Run the chosen engine (the naive loop if the adapter has no fast path) over `layers`."""
    check_engine(engine)
    if engine == "fast" and supports_fast(adapter):
        return fast_sweep(adapter, prompts, images, layers, max_new_tokens=max_new_tokens,
                          batch_size=batch_size, on_layer=on_layer, logger=logger)
    if engine == "fast" and logger is not None:
        logger.info("%s has no fast sweep path: running the naive engine", adapter.name)
    results = {}
    for layer in layers:
        results[layer] = respond(adapter, prompts, images, layer, max_new_tokens=max_new_tokens,
                                 batch_size=naive_batch_size, logger=logger)
        if on_layer is not None:
            on_layer(layer, results[layer])
    return results
