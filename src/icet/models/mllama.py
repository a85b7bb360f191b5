"""Llama 3.2 Vision (Mllama) behind the VLMAdapter interface: ICET-l as an early exit of the
local vision encoder.

Mllama has no `vision_feature_layer`. Its vision model runs a *local* encoder (N = 32 layers
in the 11B model), then an 8-layer *global* encoder on the local output, and hands the LM
(through cross-attention, not input tokens) the global output concatenated with *taps* of
the local encoder at `intermediate_layers_indices` ([3, 7, 15, 23, 30]: in transformers'
indexing, tap i is the output of layer i+1). So "the features of layer l" is not one tensor.

What ICET-l means here (l = 0..N): **the local encoder exits after layer l**. Layers l+1..N
are skipped, i.e. act as the identity, and everything downstream runs unchanged on the exit
state: the global encoder receives it, and every tap past l reads it (those layers never
ran, so the exit state is all the encoder has). l = N is the unmodified model, so the
default layer is N. Why this definition: it is LLaVA's ICET-l transported faithfully — the
image encoder stops at layer l and the frozen, trained remainder of the pipeline (here the
global encoder and the projector, there the projector) maps that state to the LM. The
alternative of swapping only the final local output leaves the taps at 4/8/16/24/31 intact,
so the LM would still see mostly-default features at every l and the sweep would measure
little; swapping the taps alone has no single "layer" to name.

How: the loaded model is `IcetMllamaForConditionalGeneration`, transformers' class plus one
keyword, `icet_layer`, which `generate` passes through to every forward. A forward with
`icet_layer=l < N` registers forward hooks that return each skipped layer's input as its
output (the layers still run: a vision pass is a small part of a prefill, and hooks keep
transformers' code untouched) and removes them when the call ends, so no state outlives a
call and deep copies (L-PPO's reference model) behave the same.

The cross-attention mask (which text tokens see which image tiles) is a function of the
token ids. Every forward whose `input_ids` hold the image token (and that carries a mask)
rebuilds it from those ids with the processor's own functions, so a caller that re-pads or extends the text (L-PPO scoring prompt + response)
gets the mask the processor would have built for that text.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers import MllamaForConditionalGeneration
from transformers.conversion_mapping import (get_checkpoint_conversion_mapping,
                                             register_checkpoint_conversion_mapping)

from icet.errors import IcetError
from icet.models.base import VLMAdapter
from icet.models.llava import LlavaAdapter, base_model_of, load_image

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
def early_exit(layers: Any, layer: int | None) -> Iterator[None]:
    """While inside: layers after `layer` (1-based count; None = all run) return their input."""
    if layer is None or layer >= len(layers):
        yield
        return

    def identity(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    handles = [block.register_forward_hook(identity, with_kwargs=True) for block in layers[layer:]]
    try:
        yield
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


class IcetMllamaForConditionalGeneration(MllamaForConditionalGeneration):
    """MllamaForConditionalGeneration with an `icet_layer` keyword (see the module docstring)."""

    def forward(self, *args: Any, icet_layer: int | None = None, **kwargs: Any) -> Any:
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
        with early_exit(layers, icet_layer):
            return super().forward(*args, **kwargs)


class MllamaAdapter(VLMAdapter):
    """A (possibly peft-wrapped) IcetMllamaForConditionalGeneration and its MllamaProcessor.

    Prompt formatting, batching, generation and response splitting are LLaVA's (the same
    chat-template call, left padding, first-EOS cut), borrowed method by method rather than
    inherited, so that `isinstance(adapter, LlavaAdapter)` keeps meaning "has a
    vision_feature_layer".
    """

    def __init__(self, model: Any, processor: Any, name: str | None = None,
                 info: dict[str, Any] | None = None):
        base = base_model_of(model)
        self.name = name or str(getattr(base.config, "name_or_path", "") or type(base).__name__)
        if not isinstance(base, IcetMllamaForConditionalGeneration):
            raise IcetError(f"{self.name}: expected an IcetMllamaForConditionalGeneration, "
                            f"got {type(base).__name__}")
        self.model = model
        self.processor = processor
        self.model_type = "mllama"
        self.num_layers = len(local_layers(model))
        configured = int(base.config.vision_config.num_hidden_layers)
        if self.num_layers != configured:
            raise IcetError(f"{self.name}: local vision encoder has {self.num_layers} layers but "
                            f"vision_config.num_hidden_layers is {configured}")
        self.default_layer = self.num_layers  # the unmodified model
        if getattr(processor, "chat_template", None) is None:
            raise IcetError(f"{self.name}: the processor has no chat template")
        processor.tokenizer.padding_side = "left"
        self.info = dict(info or {})
        self.info.update(model_type="mllama", num_layers=self.num_layers,
                         default_layer=self.default_layer,
                         intermediate_layers_indices=list(base.config.vision_config.intermediate_layers_indices),
                         num_global_layers=int(base.config.vision_config.num_global_layers),
                         icet_definition="local encoder exits after layer l")

    device = LlavaAdapter.device
    dtype = LlavaAdapter.dtype
    eos_token_ids = LlavaAdapter.eos_token_ids
    chat_texts = LlavaAdapter.chat_texts
    logits = LlavaAdapter.logits
    generate = LlavaAdapter.generate
    split_generations = LlavaAdapter.split_generations

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Like LLaVA's, but images nested per prompt (one each) and no second BOS.

        MllamaProcessor puts a BOS in front of any text that lacks one, and the Llama 3
        tokenizer would add another: `add_special_tokens=False`, as Meta's model card does.
        """
        if len(prompts) != len(images):
            raise IcetError(f"{self.name}: {len(prompts)} prompts but {len(images)} images")
        if not prompts:
            raise IcetError(f"{self.name}: empty batch")
        inputs = self.processor(text=self.chat_texts(prompts), images=[[load_image(i)] for i in images],
                                padding=True, add_special_tokens=False, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        return {ICET_KWARG: self.check_layer(layer)}
