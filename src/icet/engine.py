"""The ICET sweep engines: the naive loop, and the fast one (one encoder pass for every layer,
many (prompt, layer) rows decoded together).

The naive loop (`respond`, engine "naive") calls `generate` per layer: it reruns the vision
encoder for every layer and decodes one layer's batch at a time. In the fast engine the vision
tower runs once per image per layer group with all hidden states, every layer's features go
through the frozen projector, and the (prompt, layer) rows are decoded as one left-padded
batch with a KV cache, greedily, dropping rows from the batch as they reach EOS. With greedy
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
as keywords, and drops finished rows from them as from the cache. An adapter may also
declare `fast_row_bytes(max_tokens)`, the memory a row holds beyond its self-attention KV
cache, for the "auto" batch size.
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
GPU_MEMORY_SHARE = 0.5  # of free memory for the KV cache and activations; the rest is headroom

MAX_NEW_TOKENS = 32  # enough for the toy organism's templated answers; the paper's runs use more
BATCH_SIZE = 16  # fits a 7B LLaVA in bf16 on one GPU with 576 image tokens per prompt

LayerDone = Callable[[int, list[dict[str, Any]]], None]


def respond(adapter: Any, prompts: list[str], images: list[Any], layer: int, *,
            max_new_tokens: int = MAX_NEW_TOKENS, batch_size: int = BATCH_SIZE,
            logger: Any = None) -> list[dict[str, Any]]:
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


def resolve_batch_size(batch_size: int | str, adapter: Any, max_tokens: int) -> int:
    """Rows per decode batch: an integer as given, or "auto" from the device's free memory.

    On a GPU a row costs its KV cache (2 x LM layers x KV heads x head dim x `max_tokens`
    positions) plus one row of logits; GPU_MEMORY_SHARE of free memory is spent on rows.
    """
    if batch_size != "auto":
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise IcetError(f"sweep batch_size must be an integer >= 1 or 'auto', got {batch_size!r}")
        return batch_size
    device = adapter.device
    if device.type != "cuda":
        return CPU_AUTO_ROWS
    text = adapter.model.config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = torch.tensor([], dtype=adapter.dtype).element_size()
    per_row = (2 * text.num_hidden_layers * heads * head_dim * max_tokens * itemsize
               + 4 * text.vocab_size + 8 * max_tokens * text.hidden_size * itemsize)
    extra = getattr(adapter, "fast_row_bytes", None)
    if extra is not None:
        per_row += int(extra(max_tokens))
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_AUTO_ROWS, int(free * GPU_MEMORY_SHARE // per_row)))


def decode(adapter: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
           max_new_tokens: int, eos_ids: set[int], row_inputs: dict[str, torch.Tensor] | None = None,
           choose: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[tuple[list[int], bool]]:
    """Responses (token ids up to and including EOS, finished) of left-padded rows, each
    token `choose(logits [rows, vocab])`: greedy (argmax) unless given (L-PPO samples).

    Position ids skip the left padding and the mask grows by one column a step, as in
    `generate`; a row that emits EOS leaves the batch (and its KV cache and `row_inputs`,
    the adapter's extra per-row model inputs) at once.
    """
    extras = dict(row_inputs or {})
    rows = inputs_embeds.shape[0]
    tokens: list[list[int]] = [[] for _ in range(rows)]
    finished = [False] * rows
    alive = torch.arange(rows)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = adapter.new_cache()
    eos = torch.tensor(sorted(eos_ids), device=inputs_embeds.device)
    with torch.inference_mode():
        logits = adapter.lm_forward(inputs_embeds, mask, positions, cache, **extras)
        for step in range(max_new_tokens):
            chosen = logits.argmax(-1) if choose is None else choose(logits)
            done = torch.isin(chosen, eos)
            for row, token, stop in zip(alive.tolist(), chosen.tolist(), done.tolist()):
                tokens[row].append(token)
                finished[row] = stop
            if step == max_new_tokens - 1:
                break
            if bool(done.any()):
                keep = (~done).nonzero().squeeze(-1)
                if keep.numel() == 0:
                    break
                cache.batch_select_indices(keep)
                alive, mask, chosen = alive[keep.cpu()], mask[keep], chosen[keep]
                positions = positions[keep]
                extras = {name: value[keep] for name, value in extras.items()}
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
            positions = positions[:, -1:] + 1
            logits = adapter.lm_forward(adapter.embed_tokens(chosen[:, None]), mask, positions, cache,
                                        **extras)
    return list(zip(tokens, finished))


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
               logger: Any = None) -> dict[int, list[dict[str, Any]]]:
    """Every layer's responses to the (prompt, image) pairs, in order; `on_layer` as each layer completes."""
    if len(prompts) != len(images):
        raise IcetError(f"{len(prompts)} prompts but {len(images)} images")
    for layer in layers:
        adapter.check_layer(layer)
    eos_ids = adapter.eos_token_ids
    # "auto" sizes the batch for the first prompt's length (the test sets' prompts are alike).
    prompt_tokens = adapter.prepare(prompts[:1], images[:1])["input_ids"].shape[1] if prompts else 0
    rows = resolve_batch_size(batch_size, adapter, prompt_tokens + max_new_tokens)
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
                                                      [images[i] for i in picked], group)
            mask = inputs["attention_mask"]
            prompt_ids = [ids[keep.bool()].tolist() for ids, keep in zip(inputs["input_ids"].cpu(), mask.cpu())]
            per_layer = [row_inputs_of(embeds[layer]) for layer in group]
            stacked = {name: torch.cat([rows[name] for rows in per_layer]) for name in per_layer[0]}
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
