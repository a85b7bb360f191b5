"""Llama 3.2 Vision (Mllama) behind the VLMAdapter interface: ICET-l as an early exit of the
local vision encoder.

Mllama has no `vision_feature_layer`. Its vision model runs a *local* encoder (N = 32 layers
in the 11B model), then an 8-layer *global* encoder on the local output, and hands the LM
(through cross-attention, not input tokens) the global output concatenated with *taps* of
the local encoder at `intermediate_layers_indices` ([3, 7, 15, 23, 30]). So "the features of
layer l" is not one tensor.

Taps: tap i is the state *before* block i, i.e. the output of layer i (layers counted from 1),
as in Meta's reference (llama-models, models/llama3/multimodal/model.py,
`ImageTransformer.forward`: `if idx in return_intermediate: out.append(x)` before
`x = r(x)`) and in transformers <= 4.54 (its encoder's hidden_states began with the input).
transformers 4.56 and later (5.23 included) collect each layer's output *after* the layer
and index those, so tap i reads the output of layer i+1 (4, 8, 16, 24, 31), and 4.55 read the
final output for every tap; the cross-version check is in docs/mllama-taps.md. We give the
model the reference taps (`reference_taps`), so the unmodified model (l = N) is Meta's.

What ICET-l means here (l = 0..N): **the local encoder exits after layer l**. Layers l+1..N
are skipped, i.e. act as the identity, and everything downstream runs unchanged on the exit
state: the global encoder receives it, and every tap past l reads it (those layers never
ran, so the exit state is all the encoder has). l = N is the unmodified model (with the
reference taps), so the default layer is N. Why this definition: it is LLaVA's ICET-l
transported faithfully — the image encoder stops at layer l and the frozen, trained
remainder of the pipeline (here the global encoder and the projector, there the projector)
maps that state to the LM. The
alternative of swapping only the final local output leaves the taps after 3/7/15/23/30 intact,
so the LM would still see mostly-default features at every l and the sweep would measure
little; swapping the taps alone has no single "layer" to name.

How: the loaded model is `IcetMllamaForConditionalGeneration`, transformers' class plus one
keyword, `icet_layer`, which `generate` passes through to every forward. A forward with
`icet_layer=l < N` registers forward hooks that return each skipped layer's input as its
output (the layers still run: a vision pass is a small part of a prefill, and hooks keep
transformers' code untouched) and removes them when the call ends, so no state outlives a
call and deep copies (L-PPO's reference model) behave the same. Every forward also records
each local block's input and hands those to transformers as the encoder's hidden_states
(`reference_taps`), which is where its taps are read from.

The cross-attention mask (which text tokens see which image tiles) is a function of the
token ids. Every forward whose `input_ids` hold the image token (and that carries a mask)
rebuilds it from those ids with the processor's own functions, so a caller that re-pads or extends the text (L-PPO scoring prompt + response)
gets the mask the processor would have built for that text.

The fast sweep (icet.engine) skips the hooks: `layer_embeddings` runs the vision model once
per batch, capturing the local encoder's input and every layer's output, which gives every
l's exit state and taps at the price of one local pass. The global encoder reads the exit
state, so it runs once per requested l < N (layer N's features are the vision model's own
output); for the 11B model that is 8 global layers per l instead of the naive loop's full
32 + 8 per l. The LM then gets each layer's
projected states as per-row `cross_attention_states` (prefill only: they are cached in
the cross-attention layers' KV cache) and the processor's cross-attention mask (its last
row for every generated token, as `generate` extends it).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers import MllamaForConditionalGeneration
from transformers.conversion_mapping import (get_checkpoint_conversion_mapping,
                                             register_checkpoint_conversion_mapping)

from icet.errors import IcetError
from icet.models.base import VLMAdapter, base_model_of, early_exit, hook_block_inputs, load_image  # noqa: F401

ICET_KWARG = "icet_layer"
_CLASS_NAME = "IcetMllamaForConditionalGeneration"

# transformers renames checkpoint keys (the released layout -> its module tree) only for its
# own classes; a subclass defined here counts as custom code and would load with a missing
# lm_head. Registering Mllama's renaming under our class name is the documented way in.
if get_checkpoint_conversion_mapping(_CLASS_NAME) is None:
    register_checkpoint_conversion_mapping(_CLASS_NAME, get_checkpoint_conversion_mapping("mllama"))


def local_layers(model: Any) -> Any:
    """The local vision encoder's layers (the ones ICET-l exits from)."""
    return base_model_of(model).model.vision_model.transformer.layers


@contextmanager
def reference_taps(encoder: Any) -> Iterator[list]:
    """While inside: the local encoder reports the input of every block as its hidden_states.

    transformers' MllamaVisionModel reads tap i as `output.hidden_states[i]`; with this tuple
    that is the state before block i, Meta's tap (module docstring), whatever convention the
    installed transformers uses for its own tuple. Yields the list it fills during a call:
    entry j (j < N) is block j's input, entry N the encoder's output, so entry l is the state
    after l layers (with `early_exit`, after the exit: skipped blocks pass their input on).
    """
    layers = encoder.layers
    states: list = [None] * (len(layers) + 1)

    def report(module, args, kwargs, output):
        states[-1] = output.last_hidden_state
        return type(output)(last_hidden_state=output.last_hidden_state, hidden_states=tuple(states[:-1]))

    handles = hook_block_inputs(layers, states)
    handles.append(encoder.register_forward_hook(report, with_kwargs=True))
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def cross_attention_mask_for(input_ids: torch.Tensor, aspect_ratio_mask: torch.Tensor,
                             image_token_id: int) -> torch.Tensor:
    """[B, T, images, tiles]: what MllamaProcessor builds for these (padded) ids."""
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense, get_cross_attention_token_mask)

    token_masks = [get_cross_attention_token_mask(row, image_token_id) for row in input_ids.tolist()]
    num_tiles = [[int(aspect_ratio_mask[b, i].sum()) for i in range(len(masks))]
                 for b, masks in enumerate(token_masks)]
    dense = convert_sparse_cross_attention_mask_to_dense(
        token_masks, num_tiles=num_tiles, max_num_tiles=aspect_ratio_mask.shape[-1],
        length=input_ids.shape[1])
    return torch.from_numpy(dense).to(input_ids.device)


def vision_states_per_layer(model: Any, inputs: dict[str, torch.Tensor],
                            layers: list[int]) -> dict[int, torch.Tensor]:
    """Per ICET layer l, the projected vision states [batch, images*tiles*patches, hidden].

    Mirrors MllamaVisionModel.forward past its local encoder (post layernorm, post-tile
    embedding, global encoder, padding crop, taps) on the exit state of layer l; the vision
    model's own pass (with the reference taps) supplies the local states and layer N's features.
    """
    base = base_model_of(model)
    vision = base.model.vision_model
    local = vision.transformer
    seen: dict[str, Any] = {}

    def grab_mask(module, args, kwargs):
        seen["mask"] = kwargs["attention_mask"]

    handle = local.register_forward_pre_hook(grab_mask, with_kwargs=True)
    try:
        with reference_taps(local) as states:  # states[l]: the local encoder's exit after l layers
            full = vision(pixel_values=inputs["pixel_values"], aspect_ratio_ids=inputs["aspect_ratio_ids"],
                          aspect_ratio_mask=inputs["aspect_ratio_mask"]).last_hidden_state
    finally:
        handle.remove()
    batch, media, tiles, patches = full.shape[:4]
    padded = states[0].shape[1] // tiles
    ratio_ids = inputs["aspect_ratio_ids"].reshape(batch * media, -1)
    hidden_size = base.config.text_config.hidden_size
    out = {}
    for layer in layers:
        if layer == len(states) - 1:
            features = full
        else:
            x = vision.layernorm_post(states[layer]).reshape(batch * media, tiles, padded, -1)
            x = vision.post_tile_positional_embedding(x, ratio_ids)
            x = vision.global_transformer(x.reshape(batch * media, tiles * padded, -1),
                                          attention_mask=seen["mask"]).last_hidden_state
            x = x.reshape(batch, media, tiles, padded, -1)[:, :, :, :patches]
            # Meta's tap i is the state before block i; skipped blocks leave the exit state
            taps = torch.stack([states[min(i, layer)] for i in vision.intermediate_layers_indices], dim=-1)
            taps = taps.reshape(batch, media, tiles, padded, -1)[:, :, :, :patches]
            features = torch.cat([x, taps], dim=-1)
            del x, taps  # each layer's temporaries go before the next layer's are made
        # MllamaModel reshapes to [batch*images*tiles, patches, hidden] and the cross-attention
        # views it back per row; one row per prompt is what the engine slices.
        out[layer] = base.model.multi_modal_projector(features).reshape(batch, -1, hidden_size)
        del features
    return out


class IcetMllamaForConditionalGeneration(MllamaForConditionalGeneration):
    """MllamaForConditionalGeneration with an `icet_layer` keyword (see the module docstring)."""

    def forward(self, *args: Any, icet_layer: int | None = None,
                logits_to_keep: int | torch.Tensor = 0, **kwargs: Any) -> Any:
        # `logits_to_keep` is named so that `generate` sees the model supports it and asks
        # for the last position's logits only (else a prefill computes all: 16 rows x 1,100
        # positions x 128,256 is 4.5 GB in bf16).
        kwargs["logits_to_keep"] = logits_to_keep
        layers = self.model.vision_model.transformer.layers
        if icet_layer is not None and (isinstance(icet_layer, bool) or not isinstance(icet_layer, int)
                                       or not 0 <= icet_layer <= len(layers)):
            raise IcetError(f"mllama: icet_layer {icet_layer!r} out of range 0..{len(layers)}")
        ids, ratio_mask = kwargs.get("input_ids"), kwargs.get("aspect_ratio_mask")
        if (not args and ids is not None and ratio_mask is not None
                and kwargs.get("cross_attention_mask") is not None
                and bool((ids == self.config.image_token_index).any())):
            kwargs["cross_attention_mask"] = cross_attention_mask_for(
                ids, ratio_mask, self.config.image_token_index)
        with early_exit(layers, icet_layer), reference_taps(self.model.vision_model.transformer):
            return super().forward(*args, **kwargs)


class MllamaAdapter(VLMAdapter):
    """A (possibly peft-wrapped) IcetMllamaForConditionalGeneration and its MllamaProcessor.

    Prompt formatting, batching, generation and response splitting are VLMAdapter's (the
    same chat-template call, left padding, first-EOS cut as LLaVA); only the processor's
    image nesting and special tokens differ.
    """

    def __init__(self, model: Any, processor: Any, name: str | None = None,
                 info: dict[str, Any] | None = None):
        base, self.name = self._checked_base(model, name, IcetMllamaForConditionalGeneration)
        vision = base.config.vision_config
        self._bind(model, processor, name=self.name, model_type="mllama",
                   num_layers=len(local_layers(model)),
                   configured=int(vision.num_hidden_layers), what="the local vision encoder",
                   info=info,
                   intermediate_layers_indices=list(vision.intermediate_layers_indices),
                   num_global_layers=int(vision.num_global_layers),
                   icet_definition="local encoder exits after layer l",
                   taps="state before block i (Meta's reference; transformers >= 4.56 "
                        "reads the state after it)")

    # Llama 3.2's processor takes a list of images per prompt (one each here), and puts a BOS
    # in front of any text that lacks one while the Llama 3 tokenizer would add another:
    # `add_special_tokens=False`, as Meta's model card does.
    processor_kwargs = {"add_special_tokens": False}

    def processor_images(self, images: list[Any]) -> list[Any]:
        return [[self.fit_image(load_image(i))] for i in images]

    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        return {ICET_KWARG: self.check_layer(layer)}

    # The fast sweep engine (icet.engine): this flag and the members below opt in.
    supports_fast_sweep = True

    def layer_embeddings(self, prompts: list[str], images: list[Any], layers: list[int],
                         vision_batch: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
        """Prepared inputs and, per ICET layer, the LM's per-row inputs (see the module docstring).

        The text embeddings are the same for every layer (the image enters by cross-attention);
        the cross-attention mask is the processor's, rebuilt from the ids as `forward` does, in
        the model's dtype (0/1 either way; transformers expands it to every vision token, and
        int64 would cost 8 bytes each). The vision model runs on `vision_batch` images at a
        time (None: all): it holds every local layer's state of the images it runs, ~1 GB an
        image for the 11B (icet.memory).
        """
        for layer in layers:
            self.check_layer(layer)
        inputs = self.prepare(prompts, images)
        base = base_model_of(self.model)
        step = max(1, int(vision_batch or len(prompts)))
        vision_keys = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")
        with torch.inference_mode():
            parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
            for start in range(0, len(prompts), step):
                some = {key: inputs[key][start:start + step] for key in vision_keys}
                for layer, state in vision_states_per_layer(self.model, some, layers).items():
                    parts[layer].append(state)
            states = {layer: torch.cat(parts.pop(layer)) for layer in layers}
            text_embeds = self.embed_tokens(inputs["input_ids"])
        cross_mask = cross_attention_mask_for(inputs["input_ids"], inputs["aspect_ratio_mask"],
                                              base.config.image_token_index).to(text_embeds.dtype)
        return inputs, {layer: {"inputs_embeds": text_embeds, "cross_attention_states": states[layer],
                                "cross_attention_mask": cross_mask} for layer in layers}

    # Inputs the LM reads at the prefill only (then cached in the cross-attention layers'
    # KV): the engine drops them after the prefill instead of carrying them to the end.
    prefill_only_inputs = ("cross_attention_states",)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return base_model_of(self.model).model.language_model.embed_tokens(ids)

    def lm_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, past_key_values: Any, *,
                   cross_attention_mask: torch.Tensor,
                   cross_attention_states: torch.Tensor | None = None) -> torch.Tensor:
        """Last-position next-token logits, as MllamaModel.forward computes them.

        The prefill (empty cache) feeds the vision states, which the cross-attention layers
        cache; later steps need none (the engine drops them: `prefill_only_inputs`) and use
        the mask's last row, as `generate` does.
        """
        from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

        base = base_model_of(self.model)
        prefill = past_key_values.get_seq_length() == 0
        mask = cross_attention_mask if prefill else cross_attention_mask[:, -1:]
        mask, full_rows = _prepare_cross_attention_mask(mask, num_vision_tokens=base.model.vision_model.num_patches,
                                                        dtype=base.model.dtype)
        out = base.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         position_ids=position_ids,
                                         cross_attention_states=cross_attention_states if prefill else None,
                                         cross_attention_mask=mask, full_text_row_masked_out_mask=full_rows,
                                         past_key_values=past_key_values, use_cache=True)
        return base.lm_head(out.last_hidden_state[:, -1:])[:, -1]

    token_axes = {"inputs_embeds": 1, "cross_attention_mask": 1}

    def lm_sequence(self, model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, keep: int, *, cross_attention_states: torch.Tensor,
                    cross_attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and last hidden state at the last `keep` positions (VLMAdapter.lm_sequence).

        Tokens after the prompt see the image as its last token does (the processor's mask
        runs from the image token to the end), so the prompt's mask is extended by its last
        row, as `generate` extends it.
        """
        from transformers.models.mllama.modeling_mllama import _prepare_cross_attention_mask

        base = base_model_of(model)
        after = inputs_embeds.shape[1] - cross_attention_mask.shape[1]
        if after > 0:
            last = cross_attention_mask[:, -1:]
            cross_attention_mask = torch.cat([cross_attention_mask,
                                              last.expand(-1, after, *last.shape[2:])], dim=1)
        mask, full_rows = _prepare_cross_attention_mask(
            cross_attention_mask, num_vision_tokens=base.model.vision_model.num_patches,
            dtype=base.model.dtype)
        out = base.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         position_ids=position_ids,
                                         cross_attention_states=cross_attention_states,
                                         cross_attention_mask=mask, full_text_row_masked_out_mask=full_rows,
                                         use_cache=False)
        hidden = out.last_hidden_state[:, -keep:]
        return base.lm_head(hidden), hidden
