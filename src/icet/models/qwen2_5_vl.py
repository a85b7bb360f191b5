"""Qwen2.5-VL (Qwen/Qwen2.5-VL-7B-Instruct) behind the VLMAdapter interface: an optional
fourth model, sweep only (docs/qwen2_5_vl.md).

The vision tower (transformers 5.23, models/qwen2_5_vl/modeling_qwen2_5_vl.py,
`Qwen2_5_VisionTransformerPretrainedModel.forward`) is a ViT of N blocks (`depth`, 32 in
the 7B) over 14x14 patches: patch embedding (a Conv3d over 2 frames x 14 x 14, no position
embedding), then the tokens are *permuted* into window order (`window_index`: 2x2 merge
units grouped into windows of 112x112 px, 4x4 merged tokens), the blocks run in that order
with 2-D rotary position embeddings (permuted the same way) applied inside attention, the
blocks in `fullatt_block_indexes` (7, 15, 23, 31: transformers' defaults, which the 7B's
config.json relies on, docs/qwen2_5_vl.md) attending over the whole image and every
other block only within its window, then the patch merger (RMSNorm, 2x2 tokens
concatenated, 2-layer MLP to the LM width) and the *reverse* permutation back to raster
order. The LM receives those merged tokens at the image placeholders, with 3-D M-RoPE
positions (time, row, column) that depend only on the image grid, never on the features.

What ICET-l means here (l = 0..N): **the ViT exits after block l**, and the frozen
remainder of the pipeline, the patch merger and the reverse permutation, runs on the exit
state, as the unmodified model runs it on block N's output. l = 0 is the patch embeddings;
l = N is the unmodified model, so the default layer is N (as Mllama; Qwen2.5-VL has no
`vision_feature_layer`). The window permutation is a fixed reordering of the merge units
that the merger's reverse permutation undoes whatever l is, so exiting needs no change to
it; the exit state is whatever the blocks up to l made it. When block l is a
window-attention block (every l not in 8, 16, 24, 32 in the 7B, counting l from 1), each
token has mixed with the rest of the image only through the full-attention blocks before
it (none for l < 8) and otherwise only within its 112 px window: early exits give features
with progressively less global context, which is the ViT's own structure, not something
the definition adds. Positional information enters the ViT only through the rotary
embeddings inside attention, so l = 0 carries none (the LM's M-RoPE still places each
token). Why this definition: it is LLaVA's and Mllama's ICET-l carried over, the encoder
stops at l and the trained, frozen projection (here the merger) maps that state to the LM.

How: the loaded model is `IcetQwen2_5_VLForConditionalGeneration`, transformers' class plus
one keyword, `icet_layer`, on `forward` and on `generate` (which encodes the images before
its first forward). With `icet_layer=l < N` forward hooks make blocks l+1..N return their
input for the duration of the call (icet.models.base.early_exit, as for Mllama:
transformers' code stays untouched, nothing outlives the call).

The fast sweep (icet.engine) runs the ViT once per batch, recording every block's input
(the state after l blocks) and the last block's output, and sends each requested l's state
through the merger and the reverse permutation. The LM's prefill gets the features at the
image placeholders and the M-RoPE positions `get_rope_index` computes from the ids and the
image grid (the same for every l); every later token gets its text position plus the row's
`rope_deltas`, which is what `generate` feeds Qwen2.5-VL (its
`_prepare_position_ids_for_generation`, text positions stacked on the 3-D ones).

L-PPO is not supported (icet.models.registry): its rollouts and scoring pass 2-D position
ids, which Qwen2.5-VL's LM would broadcast over its three M-RoPE axes.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
from transformers.conversion_mapping import (get_checkpoint_conversion_mapping,
                                             register_checkpoint_conversion_mapping)

from icet.errors import IcetError
from icet.models import registry
from icet.models.base import VLMAdapter, base_model_of, early_exit, hook_block_inputs

ICET_KWARG = "icet_layer"
_CLASS_NAME = "IcetQwen2_5_VLForConditionalGeneration"

# The released checkpoint keeps `visual.*` and `model.*` (the LM) at the top; transformers
# renames them into its module tree for its own classes only, so a subclass registers the
# same renaming under its name (as icet.models.mllama does).
if get_checkpoint_conversion_mapping(_CLASS_NAME) is None:
    register_checkpoint_conversion_mapping(
        _CLASS_NAME, get_checkpoint_conversion_mapping("Qwen2_5_VLForConditionalGeneration"))


def vision_blocks(model: Any) -> Any:
    """The ViT's blocks (the ones ICET-l exits after)."""
    return base_model_of(model).model.visual.blocks


def window_index_of(visual: Any, grid_thw: torch.Tensor) -> torch.Tensor:
    """The ViT's window permutation of merge units for these images (what its forward uses)."""
    from transformers.vision_utils import get_vision_window_index

    index, _ = get_vision_window_index(grid_thw, spatial_merge_size=visual.spatial_merge_size,
                                       window_size=visual.window_size, patch_size=visual.patch_size)
    return index


def exit_states(visual: Any, pixel_values: torch.Tensor, grid_thw: torch.Tensor
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One ViT pass: the state after l blocks for l = 0..N (window order) and its own output.

    Entry l < N is block l's input, entry N the last block's output.
    """
    blocks = visual.blocks
    states: list = [None] * (len(blocks) + 1)

    def last_output(module, args, kwargs, output):
        states[-1] = output

    handles = hook_block_inputs(blocks, states)
    handles.append(blocks[-1].register_forward_hook(last_output, with_kwargs=True))
    try:
        pooled = visual(pixel_values.type(visual.dtype), grid_thw=grid_thw).pooler_output
    finally:
        for handle in handles:
            handle.remove()
    return states, pooled


def merged_features(visual: Any, state: torch.Tensor, window_index: torch.Tensor) -> torch.Tensor:
    """The merger on an exit state, then the reverse permutation: the features the LM gets."""
    return visual.merger(state)[torch.argsort(window_index), :]


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor without its video processor: same image processor, tokenizer,
    chat template and placeholder expansion (its __init__ and replace_image_token).

    transformers' video processors need torchvision, which the sweep's environment does not
    install (it would also switch LLaVA's image processors to their torchvision backend and
    move pixels); the sweep feeds images only, so the video half is left out.
    """

    @classmethod
    def get_attributes(cls) -> list[str]:
        return ["image_processor", "tokenizer"]

    def __init__(self, image_processor: Any = None, tokenizer: Any = None,
                 chat_template: str | None = None, **kwargs: Any):
        from transformers.processing_utils import ProcessorMixin

        # Qwen2_5_VLProcessor.__init__'s token attributes, then the mixin without a video processor
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = (getattr(tokenizer, "image_token_id", None)
                               or tokenizer.convert_tokens_to_ids(self.image_token))
        self.video_token_id = (getattr(tokenizer, "video_token_id", None)
                               or tokenizer.convert_tokens_to_ids(self.video_token))
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class IcetQwen2_5_VLForConditionalGeneration(Qwen2_5_VLForConditionalGeneration):
    """Qwen2_5_VLForConditionalGeneration with an `icet_layer` keyword (module docstring)."""

    def _exit_after(self, icet_layer: int | None) -> Any:
        blocks = self.model.visual.blocks
        if icet_layer is not None and (isinstance(icet_layer, bool) or not isinstance(icet_layer, int)
                                       or not 0 <= icet_layer <= len(blocks)):
            raise IcetError(f"qwen2_5_vl: icet_layer {icet_layer!r} out of range 0..{len(blocks)}")
        return early_exit(blocks, icet_layer)

    def forward(self, *args: Any, icet_layer: int | None = None, **kwargs: Any) -> Any:
        with self._exit_after(icet_layer):
            return super().forward(*args, **kwargs)

    def generate(self, *args: Any, icet_layer: int | None = None, **kwargs: Any) -> Any:
        """`generate` encodes the images before the prefill (get_image_features, outside
        `forward`; transformers 5.x's mm_encoder_outputs), so the exit wraps the whole call."""
        with self._exit_after(icet_layer):
            return super().generate(*args, **kwargs)


def _with_icet_keyword(signature: inspect.Signature) -> inspect.Signature:
    """transformers' forward signature plus `icet_layer`: `generate` checks its model kwargs
    against the signature, and Qwen2.5-VL's inputs (pixel_values, image_grid_thw, ...) must
    pass that check as they do for the parent class."""
    params = list(signature.parameters.values())
    keyword = inspect.Parameter(ICET_KWARG, inspect.Parameter.KEYWORD_ONLY, default=None)
    return signature.replace(parameters=params[:-1] + [keyword] + params[-1:])


IcetQwen2_5_VLForConditionalGeneration.forward.__signature__ = _with_icet_keyword(
    inspect.signature(Qwen2_5_VLForConditionalGeneration.forward))


class Qwen25VLAdapter(VLMAdapter):
    """A (possibly peft-wrapped) IcetQwen2_5_VLForConditionalGeneration and its processor."""

    def __init__(self, model: Any, processor: Any, name: str | None = None,
                 info: dict[str, Any] | None = None):
        base, self.name = self._checked_base(model, name, IcetQwen2_5_VLForConditionalGeneration)
        vision = base.config.vision_config
        self._bind(model, processor, name=self.name, model_type="qwen2_5_vl",
                   num_layers=len(vision_blocks(model)),
                   configured=registry.checkpoint_num_layers("qwen2_5_vl", base.config),
                   what="the ViT", info=info,
                   fullatt_block_indexes=list(vision.fullatt_block_indexes),
                   window_size=int(vision.window_size),
                   icet_definition="ViT exits after block l, then the patch merger and "
                                   "the reverse window permutation")

    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        return {ICET_KWARG: self.check_layer(layer)}

    def logits(self, prompts: list[str], images: list[Any], layer: int | None = None) -> torch.Tensor:
        """Next-token logits with layer-l features; the model computes its own M-RoPE
        positions from the ids, the image grid and the mask (2-D ids would be wrong here)."""
        kwargs = {} if layer is None else self.feature_kwargs(layer)
        inputs = self.prepare(prompts, images)
        with torch.inference_mode():
            out = self.model(**inputs, **kwargs)
        return out.logits.float()

    supports_fast_sweep = True

    def layer_embeddings(self, prompts: list[str], images: list[Any], layers: list[int],
                         vision_batch: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]]:
        """Prepared inputs and, per ICET layer, the LM's prefill embeddings plus the per-row
        M-RoPE positions [rows, 3, T] and deltas [rows, 1] (module docstring). The vision
        tower takes every image of the batch at once: icet.memory has no model of Qwen2.5-VL
        (its image sizes vary), so there is no `vision_batch` plan to follow."""
        for layer in layers:
            self.check_layer(layer)
        inputs = self.prepare(prompts, images)
        core = base_model_of(self.model).model
        input_ids, grid = inputs["input_ids"], inputs["image_grid_thw"]
        with torch.inference_mode():
            states, pooled = exit_states(core.visual, inputs["pixel_values"], grid)
            window_index = window_index_of(core.visual, grid).to(pooled.device)
            text_embeds = core.get_input_embeddings()(input_ids)
            slots = (input_ids == core.config.image_token_id).unsqueeze(-1)
            positions, deltas = core.get_rope_index(input_ids, mm_token_type_ids=inputs["mm_token_type_ids"],
                                                    image_grid_thw=grid,
                                                    attention_mask=inputs["attention_mask"])
            out = {}
            for layer in layers:
                features = pooled if layer == self.num_layers else merged_features(
                    core.visual, states[layer], window_index)
                features = features.to(text_embeds.dtype)
                if int(slots.sum()) * text_embeds.shape[-1] != features.numel():
                    raise IcetError(f"{self.name}: {int(slots.sum())} image tokens but "
                                    f"{features.numel() // text_embeds.shape[-1]} image features")
                out[layer] = {"inputs_embeds": text_embeds.masked_scatter(slots, features),
                              "rope_positions": positions.permute(1, 0, 2), "rope_deltas": deltas}
        return inputs, out

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return base_model_of(self.model).model.get_input_embeddings()(ids)

    def lm_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, past_key_values: Any, *,
                   rope_positions: torch.Tensor, rope_deltas: torch.Tensor) -> torch.Tensor:
        """Last-position next-token logits; positions as `generate` builds them: text
        positions stacked on the 3-D M-RoPE ones (prefill: get_rope_index's; later tokens:
        the text position plus the row's delta on all three axes)."""
        base = base_model_of(self.model)
        if past_key_values.get_seq_length() == 0:
            mrope = rope_positions.permute(1, 0, 2)
        else:
            mrope = (position_ids + rope_deltas)[None].expand(3, -1, -1)
        positions = torch.cat([position_ids[None], mrope], dim=0)
        out = base.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         position_ids=positions, past_key_values=past_key_values,
                                         use_cache=True)
        return base.lm_head(out.last_hidden_state[:, -1:])[:, -1]
