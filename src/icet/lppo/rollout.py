"""L-PPO rollouts: pick an image-encoder layer per sample, sample responses with that layer's
features, then score every response token under the policy, the reference and the value head
with the SAME layer's features.

Layers are sampled per sample (not per batch), so one rollout batch and one PPO minibatch mix
layers and the value head sees them all. Two ways to run such a mix:

- **across layers** (an adapter with `supports_layer_rows`: LLaVA, LLaVA-NeXT, Mllama): the
  rollout's images go through the vision tower once, each sample keeps its own layer's LM
  inputs (`VLMAdapter.layer_rows`; the encoder and projector are frozen, so they never change),
  and every generation, scoring and update runs its samples together, whatever their layers:
  one sampling decode per rollout and one forward per minibatch piece.
- **split by layer** (any other adapter): one `generate` / forward per layer present, because
  one call takes one `vision_feature_layer`.

Both give the same per-token log-probs, values and losses for the same samples
(tests/lppo/test_lppo_layer_rows.py); only their sampling draws differ.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

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
    # split by layer: the processor's other outputs for this sample (pixels); across layers:
    # the LM's inputs at this sample's layer (VLMAdapter.layer_rows), left-padded to the
    # rollout's longest prompt
    extra: dict[str, torch.Tensor]
    response_ids: torch.Tensor  # [T_i], up to and including the first EOS
    response: str = ""
    finished: bool = False
    across_layers: bool = False  # whether `extra` holds layer rows (the across-layers path)


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


def sampling_scores(logits: torch.Tensor, suppressed: Sequence[int], temperature: float,
                    top_k: int) -> torch.Tensor:
    """Next-token scores [rows, vocab] as `generate(do_sample=True)`'s processors leave them:
    suppressed ids at -inf, divided by the temperature, all but the top k at -inf (0: all)."""
    scores = logits.float()
    if suppressed:
        scores[:, list(suppressed)] = -float("inf")
    scores = scores / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[:, -1:]
        scores = scores.masked_fill(scores < kth, -float("inf"))
    return scores


def sampler(suppressed: Sequence[int], temperature: float, top_k: int
            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """One token per row from next-token logits, drawn as `generate(do_sample=True)` draws:
    one multinomial draw from `sampling_scores`' softmax, torch's global generator."""
    def choose(logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(sampling_scores(logits, suppressed, temperature, top_k), dim=-1)
        return torch.multinomial(probs, num_samples=1).squeeze(-1)

    return choose


def _sample(row: dict, layer: int, prompt_ids: torch.Tensor, extra: dict[str, torch.Tensor],
            response_ids: torch.Tensor, finished: bool, tokenizer: Any, across_layers: bool) -> Sample:
    if len(response_ids) == 0:
        raise IcetError(f"L-PPO: empty generation for row {row['id']!r}")
    return Sample(row_id=str(row["id"]), prompt=row["prompt"], layer=layer,
                  prompt_ids=prompt_ids.cpu(), extra={k: v.cpu() for k, v in extra.items()},
                  response_ids=response_ids.cpu(),
                  response=tokenizer.decode(response_ids, skip_special_tokens=True).strip(),
                  finished=finished, across_layers=across_layers)


@torch.no_grad()
def generate_samples(policy: nn.Module, adapter: VLMAdapter, rows: Sequence[dict],
                     images: Sequence[Any], layers: Sequence[int], *, max_new_tokens: int,
                     temperature: float, top_k: int, device: torch.device | str = "cpu",
                     across_layers: bool | None = None) -> list[Sample]:
    """Sample one response per row, each with its own layer's features: in one decode across
    layers where the adapter can (`across_layers` None: `adapter.supports_layer_rows`), else
    one `generate` call per layer. Randomness comes from torch's global generator: seed it
    before calling."""
    across = adapter.supports_layer_rows if across_layers is None else across_layers
    tokenizer = getattr(adapter.processor, "tokenizer", adapter.processor)
    eos_ids = sorted(getattr(adapter, "eos_token_ids", None) or {tokenizer.eos_token_id})
    suppressed = placeholder_token_ids(policy)
    if across:
        from icet.engine import decode
        from icet.models.base import base_model_of

        if base_model_of(policy) is not base_model_of(adapter.model):
            raise IcetError("L-PPO: sampling across layers runs the adapter's own model; "
                            "the policy must be it or its peft wrapper")
        inputs, layer_rows = adapter.layer_rows([r["prompt"] for r in rows], list(images), list(layers))
        embeds = layer_rows["inputs_embeds"]
        decoded = decode(adapter, embeds, inputs["attention_mask"], max_new_tokens,
                                set(eos_ids), {k: v for k, v in layer_rows.items() if k != "inputs_embeds"},
                                choose=sampler(suppressed, temperature, top_k))
        keep = inputs["attention_mask"].bool()
        return [_sample(row, int(layer), inputs["input_ids"][i][keep[i]],
                        {k: v[i] for k, v in layer_rows.items()},
                        torch.tensor(tokens, dtype=torch.long), finished, tokenizer, True)
                for i, (row, layer, (tokens, finished)) in enumerate(zip(rows, layers, decoded))]
    pad_id = tokenizer.pad_token_id
    samples: list[Sample | None] = [None] * len(rows)
    for layer, idx in by_layer(layers):
        inputs = adapter.prepare([rows[i]["prompt"] for i in idx], [images[i] for i in idx])
        inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        out = policy.generate(
            **inputs, **adapter.feature_kwargs(layer), do_sample=True, temperature=temperature,
            top_k=top_k, top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=eos_ids,
            pad_token_id=pad_id, suppress_tokens=suppressed or None)
        width = inputs["input_ids"].shape[1]
        for j, i in enumerate(idx):
            generated = out[j, width:]
            eos_at = torch.isin(generated, torch.tensor(eos_ids, device=generated.device)).nonzero()
            finished = len(eos_at) > 0
            keep = inputs["attention_mask"][j].bool()
            extra = {k: v[j] for k, v in inputs.items()
                     if k not in _TEXT_KEYS and isinstance(v, torch.Tensor)
                     and v.shape[:1] == (len(idx),)}
            samples[i] = _sample(rows[i], layer, inputs["input_ids"][j][keep], extra,
                                 generated[: int(eos_at[0]) + 1] if finished else generated,
                                 finished, tokenizer, False)
    return samples  # type: ignore[return-value]


def response_mask(samples: Sequence[Sample], width: int | None = None) -> torch.Tensor:
    """[B, T] with 1 on each response's tokens; T = the longest response unless given."""
    width = width or max(len(s.response_ids) for s in samples)
    mask = torch.zeros(len(samples), width)
    for i, s in enumerate(samples):
        mask[i, : len(s.response_ids)] = 1.0
    return mask


def pieces(samples: Sequence[Sample], indices: Sequence[int], chunk: int
           ) -> Iterator[tuple[int | None, list[int]]]:
    """(layer, positions) of the forwards that cover `indices`, at most `chunk` samples each:
    samples with layer rows run together (layer None), others one layer at a time."""
    indices = [int(i) for i in indices]
    if indices and samples[indices[0]].across_layers:
        for start in range(0, len(indices), chunk):
            yield None, indices[start: start + chunk]
        return
    for layer, idx in by_layer([s.layer for s in samples], indices):
        for start in range(0, len(idx), chunk):
            yield layer, idx[start: start + chunk]


def collate(samples: Sequence[Sample], width: int, pad_id: int,
            device: torch.device | str = "cpu", token_axes: dict[str, int] | None = None
            ) -> dict[str, torch.Tensor]:
    """Model inputs for prompt + response: prompts left-padded to the longest, responses
    right-padded to `width`, position ids counting real tokens only (as in generation), and
    each sample's `extra` stacked; layer rows cut to the same longest prompt along their
    `token_axes` (VLMAdapter.token_axes)."""
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
        stacked = torch.stack([s.extra[key] for s in samples])
        axis = (token_axes or {}).get(key) if samples[0].across_layers else None
        if axis is not None:  # the rollout's left padding beyond these samples' longest prompt
            stacked = stacked.narrow(axis, stacked.shape[axis] - prompt_len, prompt_len)
        batch[key] = stacked
    return {k: v.to(device) for k, v in batch.items()}


def _forward_rows(model: nn.Module, adapter: VLMAdapter, batch: dict[str, torch.Tensor],
                  width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of any layers in one forward: the text's embeddings from `model` (so a
    trainable embedding still learns), the image slots from each row's own layer rows."""
    from icet.models.base import base_model_of

    ids = batch["input_ids"]
    rows = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask", "position_ids")}
    prompt = rows.pop("inputs_embeds")
    text = base_model_of(model).get_input_embeddings()(ids)
    after = prompt.new_zeros(prompt.shape[0], ids.shape[1] - prompt.shape[1], prompt.shape[2])
    image = torch.cat([prompt, after], dim=1).to(text.dtype)
    slots = torch.isin(ids, torch.tensor(placeholder_token_ids(model), dtype=ids.dtype,
                                         device=ids.device)).unsqueeze(-1)
    logits, hidden = adapter.lm_sequence(model, torch.where(slots, image, text),
                                         batch["attention_mask"], batch["position_ids"],
                                         width + 1, **rows)
    return logits[:, :-1], hidden[:, :-1]


def response_logits(model: nn.Module, adapter: VLMAdapter, batch: dict[str, torch.Tensor],
                    width: int, layer: int | None, temperature: float, with_hidden: bool
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (divided by the sampling temperature, placeholders suppressed: they describe
    the sampler) that predict each of the `width` response slots, and the LM's last hidden
    state there; `layer` None: the batch's rows carry their own layers (`pieces`)."""
    if layer is None:
        logits, hidden = _forward_rows(model, adapter, batch, width)
    else:
        out = model(**batch, **adapter.feature_kwargs(layer), output_hidden_states=with_hidden,
                    logits_to_keep=width + 1, use_cache=False)
        logits = out.logits[:, :-1]
        hidden = out.hidden_states[-1][:, -(width + 1):-1] if with_hidden else None
    logits = logits.float() / temperature
    suppressed = placeholder_token_ids(model)
    if suppressed:
        logits = logits.index_fill(-1, torch.tensor(suppressed, device=logits.device),
                                   _SUPPRESSED_LOGIT)
    return logits, hidden if with_hidden else None


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

    def forward(self, adapter: VLMAdapter, batch: dict[str, torch.Tensor], width: int,
                layer: int | None, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        logits, hidden = response_logits(self.policy, adapter, batch, width, layer, temperature,
                                         with_hidden=True)
        if not self.value_trains_lm:
            hidden = hidden.detach()
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
        return logits, values


@torch.no_grad()
def score_samples(module: PolicyWithValue, reference: nn.Module | None, adapter: VLMAdapter,
                  samples: list[Sample], *, temperature: float, chunk: int,
                  device: torch.device | str = "cpu") -> Rollout:
    """Old log-probs, values and reference log-probs of every response token, each sample
    with its own layer (`pieces` of at most `chunk` samples). `reference=None` means the
    policy with its LoRA adapters disabled."""
    tokenizer = getattr(adapter.processor, "tokenizer", adapter.processor)
    pad_id = tokenizer.pad_token_id
    mask = response_mask(samples)
    width = mask.shape[1]
    tokens = response_tokens(samples, width, pad_id).to(device)
    logp = torch.zeros_like(mask)
    logp_ref = torch.zeros_like(mask)
    values = torch.zeros_like(mask)
    for layer, part in pieces(samples, range(len(samples)), chunk):
        batch = collate([samples[i] for i in part], width, pad_id, device, adapter.token_axes)
        logits, v = module(adapter, batch, width, layer, temperature)
        logp[part] = token_logp(logits, tokens[part]).cpu()
        values[part] = v.cpu()
        with (module.policy.disable_adapter() if reference is None else contextlib.nullcontext()):
            ref_logits, _ = response_logits(module.policy if reference is None else reference,
                                            adapter, batch, width, layer, temperature,
                                            with_hidden=False)
        logp_ref[part] = token_logp(ref_logits, tokens[part]).cpu()
    return Rollout(samples=samples, mask=mask, logp=logp * mask, logp_ref=logp_ref * mask,
                   values=values * mask)
