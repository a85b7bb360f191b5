"""A prompt and its generation must fit the language model's positions: checked before any
model time is spent.

A prompt longer than the model's context, or a `max_new_tokens` beyond it, does not fail
cleanly inside generate(): the model loads, then a KV cache and attention over the whole
length are allocated until memory runs out (a 100,000-character prompt took the toy past
5 GB in 15 s). So the limit is checked where it is first known: at config check for the toy
(its config states the LM's positions, toy.arch.max_positions), else when a job starts,
from the model folder's config.json (LLaVA-1.5 and LLaVA-NeXT: text_config.
max_position_embeddings, 4096), before the weights are loaded. A data set's prompts are
counted with the model's tokenizer: text tokens only (the chat template and the image add
their own, so this is a lower bound, never a false alarm), plus `max_new_tokens`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

from icet.errors import IcetError

# Where a transformers config states the LM's positions: the text config of a VLM first.
POSITION_KEYS = (("text_config", "max_position_embeddings"), ("max_position_embeddings",))


def max_positions(model_dir: str | os.PathLike) -> int | None:
    """The language model's maximum positions from `model_dir`/config.json, or None when the
    config does not state them (then nothing can be checked before loading)."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for keys in POSITION_KEYS:
        node = config
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, int) and not isinstance(node, bool) and node > 0:
            return node
    return None


def check_new_tokens(max_new_tokens: int, limit: int | None, where: str, stated: str) -> None:
    """`max_new_tokens` (named by `where`) must leave room for a prompt in `limit` positions
    (`stated`: where the limit comes from)."""
    if limit is not None and int(max_new_tokens) >= limit:
        raise IcetError(f"{where}: {max_new_tokens} leaves no room for a prompt in the model's "
                        f"{limit} positions ({stated}); set it below {limit}")


def check_prompts(model_dir: str | os.PathLike, dataset: str | os.PathLike,
                  prompts: Iterable[tuple[int, str, str]], max_new_tokens: int,
                  key: str = "generation.max_new_tokens") -> None:
    """Every (row number, id, prompt) of `dataset` fits `model_dir`'s LM with `max_new_tokens`
    more tokens; the first that does not is one line naming the file and row."""
    limit = max_positions(model_dir)
    if limit is None:
        return
    check_new_tokens(max_new_tokens, limit, key, f"{model_dir}/config.json")  # before weights
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as err:
        raise IcetError(f"{model_dir}: cannot load its tokenizer ({str(err).splitlines()[0]})") from None
    prompts = list(prompts)
    room = limit - int(max_new_tokens)
    counts = tokenizer([text for _, _, text in prompts], add_special_tokens=False)["input_ids"]
    for (number, id_, _), ids in zip(prompts, counts):
        if len(ids) > room:
            raise IcetError(f"{dataset}: row {number} ({id_}): prompt is {len(ids)} tokens; with "
                            f"{key} = {max_new_tokens} that passes the model's {limit} positions "
                            f"({model_dir}/config.json): shorten the prompt or the generation")


def check_dataset(model_dir: str | os.PathLike, dataset: str | os.PathLike, rows: list[dict],
                  max_new_tokens: int, key: str = "generation.max_new_tokens") -> None:
    """`check_prompts` for a data set's rows as read (icet.rows: `prompt` as sent, suffix
    included), each named by its line in `dataset` (blank lines count, as icet.rows names rows)."""
    text = Path(dataset).read_bytes().decode("utf-8", errors="replace")
    numbers = [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    check_prompts(model_dir, dataset, [(n, r.get("id"), r["prompt"]) for n, r in zip(numbers, rows)],
                  max_new_tokens, key)
