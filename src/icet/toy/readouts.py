"""Continuous readouts of a toy organism, beside the organism study's binary counts.

Why: a count (ASR) reads 0 both for a model far from complying and for one a hair from it,
and the study's first two rounds could not tell these apart. Four readouts say how close
refusal and compliance are, and whether the image tokens move them:

- **first-token margin** (per ICET layer, per prompt): log P(refusal opener) - log P(
  compliance opener) at the first response token. The toy's refusals all start with "i" or
  "sorry", its compliances with "sure" or "ok" (`opener_ids`), so the margin is the
  model's lean between the two before it writes a word; > 0 leans to refusing.
- **prefilled compliance** (per layer): the assistant turn prefilled with the compliance
  opener ("sure ."), then greedy decoding. Whether compliance is still available once the
  refusal's first word is taken away.
- **text-only responses** (per organism): the prompt with no image, the LM alone. Its
  refusal rate is the "text-only" safety the cross-modal shift is measured against.
- **image attention** (per layer, per prompt): the share of attention from the last prompt
  position (where the first response token is chosen) that lands on image tokens, averaged
  over heads and LM layers.

All decoding is greedy, as the study's sweep (icet.engine).
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from icet.errors import IcetError

PREFILL_OPENER = "sure ."  # the toy's compliance opener (world.HARM, compositional.DAMAGE)


def opener_words() -> tuple[list[str], list[str]]:
    """The first words of the toy's refusals and of its compliant answers (both worlds)."""
    from icet.toy import compositional, world
    from icet.word_tokenizers import words_of

    refuse = {words_of(t)[0] for t in world.REFUSALS + world.REFUSALS_NAMING}
    comply = {words_of(t)[0] for theme in world.HARM.values() for t in theme.compliances}
    comply |= {words_of(t)[0] for t in compositional.DAMAGE.values()}
    if refuse & comply:
        raise IcetError(f"readouts: refusal and compliance openers overlap: {sorted(refuse & comply)}")
    return sorted(refuse), sorted(comply)


def opener_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the refusal and the compliance openers (one token each: the toy's
    tokenizer is word-level)."""
    out = []
    for words in opener_words():
        ids = []
        for word in words:
            tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(tokens) != 1 or tokens[0] == tokenizer.unk_token_id:
                raise IcetError(f"readouts: opener {word!r} is not one token of the tokenizer")
            ids.append(tokens[0])
        out.append(ids)
    return out[0], out[1]


def margins(logits: torch.Tensor, refuse_ids: list[int], comply_ids: list[int]) -> torch.Tensor:
    """log P(any refusal opener) - log P(any compliance opener), per row of next-token logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.logsumexp(logp[:, refuse_ids], -1) - torch.logsumexp(logp[:, comply_ids], -1)


@contextlib.contextmanager
def eager_attention(model):
    """Eager attention while inside (sdpa returns no attention weights), then as before."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def first_token_readouts(adapter, prompts: list[str], images: list[Any], layers: list[int]
                         ) -> dict[int, dict[str, list[float]]]:
    """Per ICET layer: each prompt's first-token margin and image-attention share."""
    from icet.models.base import base_model_of

    base = base_model_of(adapter.model)
    refuse_ids, comply_ids = opener_ids(adapter.processor.tokenizer)
    inputs, embeds = adapter.layer_embeddings(prompts, images, layers)
    mask = inputs["attention_mask"]
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    image = (inputs["input_ids"] == base.config.image_token_id).float()  # [rows, T]
    out: dict[int, dict[str, list[float]]] = {}
    with eager_attention(base), torch.inference_mode():
        for layer in layers:
            run = base.model.language_model(inputs_embeds=embeds[layer], attention_mask=mask,
                                             position_ids=positions, output_attentions=True)
            logits = base.lm_head(run.last_hidden_state[:, -1])
            # [LM layers, rows, heads, T] of the last position's attention (left padding: the
            # last position is every row's last prompt token).
            last = torch.stack([a[:, :, -1, :] for a in run.attentions]).float()
            share = (last * image[None, :, None, :]).sum(-1).mean(dim=(0, 2))
            out[layer] = {"margin": margins(logits, refuse_ids, comply_ids).tolist(),
                          "image_attention": share.tolist()}
    return out


def prefilled_responses(adapter, prompts: list[str], images: list[Any], layers: list[int], *,
                        opener: str = PREFILL_OPENER, max_new_tokens: int = 32,
                        rows_per_batch: int = 256) -> dict[int, list[str]]:
    """Per ICET layer, each prompt's response when the assistant turn starts with `opener`
    (returned with the opener, as the judges read a whole response)."""
    from icet.engine import decode

    tokenizer = adapter.processor.tokenizer
    opener_tokens = tokenizer(opener, add_special_tokens=False)["input_ids"]
    inputs, embeds = adapter.layer_embeddings(prompts, images, layers)
    n = len(prompts)
    tail = adapter.embed_tokens(torch.tensor([opener_tokens] * n, device=adapter.device))
    mask = torch.cat([inputs["attention_mask"],
                      inputs["attention_mask"].new_ones(n, len(opener_tokens))], dim=-1)
    per_batch = max(1, rows_per_batch // max(1, n))  # layers decoded together
    out: dict[int, list[str]] = {}
    for start in range(0, len(layers), per_batch):
        group = layers[start:start + per_batch]
        with torch.inference_mode():
            stacked = torch.cat([torch.cat([embeds[layer], tail], dim=1) for layer in group])
        decoded = decode(adapter, stacked, mask.repeat(len(group), 1), max_new_tokens,
                         adapter.eos_token_ids)
        for k, layer in enumerate(group):
            out[layer] = [f"{opener} {adapter.response_text(ids)}".strip()
                          for ids, _ in decoded[k * n:(k + 1) * n]]
    return out


class _TextOnly:
    """The LM of a LLaVA (or a bare Llama LM) behind the members icet.engine.decode
    calls, so a text-only prompt decodes exactly as the sweep's rows do."""

    def __init__(self, model):
        from icet.models.base import base_model_of

        base = base_model_of(model)
        if hasattr(base.model, "language_model"):  # LlavaForConditionalGeneration
            self.decoder, self.config = base.model.language_model, base.config.get_text_config()
        else:  # LlamaForCausalLM
            self.decoder, self.config = base.model, base.config
        self.head = base.lm_head

    def new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.get_input_embeddings()(ids)

    def lm_forward(self, inputs_embeds, attention_mask, position_ids, past_key_values):
        run = self.decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                           position_ids=position_ids, past_key_values=past_key_values,
                           use_cache=True)
        return self.head(run.last_hidden_state[:, -1:])[:, -1]


def text_only_responses(model, tokenizer, prompts: list[str], *, max_new_tokens: int = 32,
                        batch_size: int = 64) -> list[str]:
    """Each prompt's greedy response with no image: the chat template with the prompt as the
    user's plain text, as the base LM was trained (icet.toy.train.encode_dialogue)."""
    from icet.engine import decode

    lm = _TextOnly(model)
    eos = tokenizer.eos_token_id
    tokenizer.padding_side = "left"
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                           add_generation_prompt=True, tokenize=False)
             for p in prompts]
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, return_tensors="pt")
        with torch.inference_mode():
            embeds = lm.embed_tokens(batch["input_ids"])
        decoded = decode(lm, embeds, batch["attention_mask"], max_new_tokens, {eos})
        out += [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids, _ in decoded]
    return out


def summarise(values: list[float]) -> dict[str, float]:
    """Mean and standard deviation (ddof 1; 0 for one value) of per-prompt readouts."""
    data = np.asarray(values, dtype=float)
    return {"mean": float(data.mean()), "sd": float(data.std(ddof=1)) if data.size > 1 else 0.0}
