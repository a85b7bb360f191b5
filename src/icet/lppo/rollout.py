"""L-PPO rollouts: pick an image-encoder layer per sample, sample responses with that layer's
features, then score every response token under the policy, the reference and the value head
with the SAME layer's features.

Layers are sampled per sample (not per batch), so one rollout batch and one PPO minibatch mix
layers and the value head sees them all. Anything that runs the model splits its samples by
layer, because one forward / generate call takes one `vision_feature_layer`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from icet.errors import IcetError
from icet.lppo.config import LppoParams, layer_ranges, schema_defaults
from icet.models.base import VLMAdapter

_TEXT_KEYS = ("input_ids", "attention_mask")
_SUPPRESSED_LOGIT = -1e9  # exp() is exactly 0 in fp32/bf16, yet 0 * it stays finite (entropy)


def placeholder_token_ids(model: nn.Module) -> list[int]:
    """Ids that only mark where image features go (LLaVA's <image>). A response must never
    contain one: re-scoring prompt+response would then find more placeholders than image
    features. They are suppressed when sampling and masked identically when scoring, so the
    sampler and the scored policy stay the same distribution.

    Only ids the LM head can emit: Llama 3.2 Vision's <|image|> (128256) is one past its
    head's 128256 outputs (the embedding has 8 extra rows), so it can never be sampled, and
    masking it would index past the logits (a device-side assert on CUDA)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    head = base.get_output_embeddings()
    outputs = head.out_features if head is not None else config.get_text_config().vocab_size
    ids = {getattr(config, key, None) for key in ("image_token_id", "image_token_index",
                                                   "video_token_id", "video_token_index")}
    return sorted(i for i in ids if isinstance(i, int) and 0 <= i < outputs)


def sample_layers(mode: str, n: int, rng: np.random.Generator, num_layers: int,
                  layer: int | None = None, groups: dict[str, Sequence[int]] | None = None
                  ) -> list[int]:
    """ICET layers for `n` samples.

    fixed:   every sample uses `layer`.
    uniform: each sample draws l uniformly from 0..N (N = num_layers, all N+1 hidden states).
    groups:  each sample draws a group uniformly from `groups` ({name: [lo, hi]}, inclusive,
             taken in sorted name order so the draw does not depend on dict order), then l
             uniformly within it. Give one group to train on that range only.
    """
    ranges = layer_ranges(mode, num_layers, layer, groups)
    if mode == "fixed":
        return [ranges[0][0]] * n
    if mode == "uniform":
        return [int(v) for v in rng.integers(0, num_layers + 1, size=n)]
    picks = rng.integers(0, len(ranges), size=n)
    return [int(rng.integers(ranges[g][0], ranges[g][1] + 1)) for g in picks]


def by_layer(layers: Sequence[int], indices: Sequence[int] | None = None
             ) -> Iterator[tuple[int, list[int]]]:
    """(layer, positions) for each layer present, in ascending layer order (deterministic)."""
    indices = range(len(layers)) if indices is None else indices
    groups: dict[int, list[int]] = defaultdict(list)
    for i in indices:
        groups[int(layers[i])].append(int(i))
    for layer in sorted(groups):
        yield layer, groups[layer]


@dataclass
class Sample:
    """One rollout sample: its prompt tokens, the model's other inputs and its response."""

    row_id: str
    prompt: str
    layer: int
    prompt_ids: torch.Tensor  # [P], no padding
    extra: dict[str, torch.Tensor]  # per-sample rows of the processor's other outputs (pixels)
    response_ids: torch.Tensor  # [T_i], up to and including the first EOS
    response: str = ""
    finished: bool = False


@dataclass
class Rollout:
    """A rollout batch and its per-token tensors ([B, T], responses right-padded to T)."""

    samples: list[Sample]
    mask: torch.Tensor
    logp: torch.Tensor
    logp_ref: torch.Tensor
    values: torch.Tensor
    scores: list[float] = field(default_factory=list)
    rewards: torch.Tensor | None = None
    kl: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    @property
    def layers(self) -> list[int]:
        return [s.layer for s in self.samples]


@torch.no_grad()
def generate_samples(policy: nn.Module, adapter: VLMAdapter, rows: Sequence[dict],
                     images: Sequence[Any], layers: Sequence[int], *, max_new_tokens: int,
                     temperature: float, top_k: int, device: torch.device | str = "cpu"
                     ) -> list[Sample]:
    """Sample one response per row, each with its own layer's features (one generate call
    per layer). Randomness comes from torch's global generator: seed it before calling."""
    tokenizer = getattr(adapter.processor, "tokenizer", adapter.processor)
    eos_ids = sorted(getattr(adapter, "eos_token_ids", None) or {tokenizer.eos_token_id})
    pad_id = tokenizer.pad_token_id
    samples: list[Sample | None] = [None] * len(rows)
    for layer, idx in by_layer(layers):
        inputs = adapter.prepare([rows[i]["prompt"] for i in idx], [images[i] for i in idx])
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = policy.generate(
            **inputs, **adapter.feature_kwargs(layer), do_sample=True, temperature=temperature,
            top_k=top_k, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
            pad_token_id=pad_id, suppress_tokens=placeholder_token_ids(policy) or None)
        width = inputs["input_ids"].shape[1]
        for j, i in enumerate(idx):
            generated = out[j, width:]
            eos_at = torch.isin(generated, torch.tensor(eos_ids, device=generated.device)).nonzero()
            finished = len(eos_at) > 0
            response_ids = generated[: int(eos_at[0]) + 1] if finished else generated
            if len(response_ids) == 0:
                raise IcetError(f"L-PPO: empty generation for row {rows[i]['id']!r}")
            keep = inputs["attention_mask"][j].bool()
            extra = {k: v[j] for k, v in inputs.items()
                     if k not in _TEXT_KEYS and isinstance(v, torch.Tensor)
                     and v.shape[:1] == (len(idx),)}
            samples[i] = Sample(
                row_id=str(rows[i]["id"]), prompt=rows[i]["prompt"], layer=layer,
                prompt_ids=inputs["input_ids"][j][keep].cpu(),
                extra={k: v.cpu() for k, v in extra.items()},
                response_ids=response_ids.cpu(),
                response=tokenizer.decode(response_ids, skip_special_tokens=True).strip(),
                finished=finished)
    return samples  # type: ignore[return-value]


def response_mask(samples: Sequence[Sample], width: int | None = None) -> torch.Tensor:
    """[B, T] with 1 on each response's tokens; T = the longest response unless given."""
    width = width or max(len(s.response_ids) for s in samples)
    mask = torch.zeros(len(samples), width)
    for i, s in enumerate(samples):
        mask[i, : len(s.response_ids)] = 1.0
    return mask


def collate(samples: Sequence[Sample], width: int, pad_id: int,
            device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Model inputs for prompt + response: prompts left-padded to the longest, responses
    right-padded to `width`, position ids counting real tokens only (as in generation)."""
    prompt_len = max(len(s.prompt_ids) for s in samples)
    total = prompt_len + width
    input_ids = torch.full((len(samples), total), pad_id, dtype=torch.long)
    attention = torch.zeros(len(samples), total, dtype=torch.long)
    for i, s in enumerate(samples):
        start = prompt_len - len(s.prompt_ids)
        input_ids[i, start:prompt_len] = s.prompt_ids
        attention[i, start:prompt_len] = 1
        n = len(s.response_ids)
        input_ids[i, prompt_len: prompt_len + n] = s.response_ids
        attention[i, prompt_len: prompt_len + n] = 1
    position_ids = (attention.cumsum(dim=1) - 1).clamp(min=0)
    batch = {"input_ids": input_ids, "attention_mask": attention, "position_ids": position_ids}
    for key in samples[0].extra:
        batch[key] = torch.stack([s.extra[key] for s in samples])
    return {k: v.to(device) for k, v in batch.items()}


def response_logits(model: nn.Module, batch: dict[str, torch.Tensor], width: int,
                    feature_kwargs: dict[str, Any], temperature: float, with_hidden: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (divided by the sampling temperature, placeholders suppressed: they describe
    the sampler) that predict each of the `width` response slots, and the LM's last hidden
    state there."""
    out = model(**batch, **feature_kwargs, output_hidden_states=with_hidden,
                logits_to_keep=width + 1, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    suppressed = placeholder_token_ids(model)
    if suppressed:
        logits = logits.index_fill(-1, torch.tensor(suppressed, device=logits.device),
                                   _SUPPRESSED_LOGIT)
    hidden = out.hidden_states[-1][:, -(width + 1):-1] if with_hidden else None
    return logits, hidden


def token_logp(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under each row of logits: [B, T, V], [B, T] -> [B, T]."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_tokens(samples: Sequence[Sample], width: int, pad_id: int) -> torch.Tensor:
    tokens = torch.full((len(samples), width), pad_id, dtype=torch.long)
    for i, s in enumerate(samples):
        tokens[i, : len(s.response_ids)] = s.response_ids
    return tokens


class PolicyWithValue(nn.Module):
    """The policy LM and its value head as one module, so one DDP wrapper covers both.

    The value head is a linear layer on the LM's last hidden state at every response slot.
    `value_trains_lm=False` detaches that state: the value loss then trains the head only.
    Why (LppoParams.value_trains_lm): with rewards on a reward model's scale the value loss
    is ~1000x the clipped policy loss, and through a shared LM it moved the policy more than
    the policy loss did; the toy's policy collapsed after ~30 steps (docs/kernel-paths.md).
    """

    def __init__(self, policy: nn.Module, hidden_size: int,
                 value_trains_lm: bool | None = None):
        super().__init__()
        self.policy = policy
        # None: the config schema's lppo.value_trains_lm, the one default
        self.value_trains_lm = (schema_defaults()["value_trains_lm"] if value_trains_lm is None
                                else value_trains_lm)
        self.value_head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)  # values start at 0: no arbitrary first baseline
        nn.init.zeros_(self.value_head.bias)

    def forward(self, batch: dict[str, torch.Tensor], width: int,
                feature_kwargs: dict[str, Any], temperature: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, hidden = response_logits(self.policy, batch, width, feature_kwargs,
                                         temperature, with_hidden=True)
        if not self.value_trains_lm:
            hidden = hidden.detach()
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values


@torch.no_grad()
def score_samples(module: PolicyWithValue, reference: nn.Module | None, adapter: VLMAdapter,
                  samples: list[Sample], *, temperature: float, chunk: int,
                  device: torch.device | str = "cpu") -> Rollout:
    """Old log-probs, values and reference log-probs of every response token, each sample
    with its own layer. `reference=None` means the policy with its LoRA adapters disabled."""
    tokenizer = getattr(adapter.processor, "tokenizer", adapter.processor)
    pad_id = tokenizer.pad_token_id
    mask = response_mask(samples)
    width = mask.shape[1]
    tokens = response_tokens(samples, width, pad_id).to(device)
    logp = torch.zeros_like(mask)
    logp_ref = torch.zeros_like(mask)
    values = torch.zeros_like(mask)
    for layer, idx in by_layer([s.layer for s in samples]):
        kwargs = adapter.feature_kwargs(layer)
        for start in range(0, len(idx), chunk):
            part = idx[start: start + chunk]
            batch = collate([samples[i] for i in part], width, pad_id, device)
            logits, v = module(batch, width, kwargs, temperature)
            logp[part] = token_logp(logits, tokens[part]).cpu()
            values[part] = v.cpu()
            if reference is None:
                with module.policy.disable_adapter():
                    ref_logits, _ = response_logits(module.policy, batch, width, kwargs,
                                                    temperature, with_hidden=False)
            else:
                ref_logits, _ = response_logits(reference, batch, width, kwargs, temperature,
                                                with_hidden=False)
            logp_ref[part] = token_logp(ref_logits, tokens[part]).cpu()
    return Rollout(samples=samples, mask=mask, logp=logp * mask, logp_ref=logp_ref * mask,
                   values=values * mask)
