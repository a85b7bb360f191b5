"""LLaVA and LLaVA-NeXT behind the VLMAdapter interface: ICET-l via `vision_feature_layer`.

Both architectures pick their image features with `hidden_states[vision_feature_layer]` of
the CLIP vision tower, crop the CLS token ("default" strategy) and send the rest through the
frozen projector. ICET-l is therefore one keyword argument: we pass the *negative* index
`l - (N+1)` because transformers treats `vision_feature_layer=0` as "no hidden states
requested" and crashes (docs/contracts.md). LLaVA-NeXT runs every any-resolution tile
through the vision tower in one batch, so the same index applies to every tile.

The fast sweep (icet.engine) does not pass the index: `layer_embeddings` runs the tower once
with every hidden state and projects each requested layer the way `get_image_features` does.
"""

from __future__ import annotations

from typing import Any

import torch

from icet.errors import IcetError
from icet.models import registry
from icet.models.base import VLMAdapter, base_model_of, load_image  # noqa: F401 (re-exported)

SUPPORTED_MODEL_TYPES = ("llava", "llava_next")


def vision_num_layers(model: Any) -> int:
    """N, the number of transformer layers of the vision tower (ICET layers are 0..N).

    Counted from the loaded modules, because that is what produces the hidden states; the
    config must agree, or the checkpoint is not what its config says.
    """
    base = base_model_of(model)
    config = base.config
    from_config = int(config.vision_config.num_hidden_layers)
    try:
        from_modules = len(base.model.vision_tower.encoder.layers)
    except AttributeError:
        return from_config
    if from_modules != from_config:
        raise IcetError(f"{config.name_or_path or type(base).__name__}: vision tower has "
                        f"{from_modules} layers but vision_config.num_hidden_layers is {from_config}")
    return from_modules


# A transformers `vision_feature_layer` (negative or not) as our ICET l in 0..N.
layer_of_feature_index = registry.feature_layer_to_icet


class LlavaAdapter(VLMAdapter):
    """A LlavaForConditionalGeneration / LlavaNextForConditionalGeneration (maybe peft-wrapped)."""

    def __init__(self, model: Any, processor: Any, name: str | None = None,
                 info: dict[str, Any] | None = None):
        base, self.name = self._checked_base(model, name)
        model_type = getattr(base.config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise IcetError(f"{self.name}: model_type {model_type!r} is not one of "
                            f"{', '.join(SUPPORTED_MODEL_TYPES)}")
        self._bind(model, processor, name=self.name, model_type=model_type,
                   num_layers=vision_num_layers(model), configured=None, what="the vision tower",
                   info=info, checkpoint_config=base.config)

    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        return {"vision_feature_layer": self.check_layer(layer) - (self.num_layers + 1)}

    # The fast sweep engine (icet.engine): this flag and the fast-sweep members below opt in.
    supports_fast_sweep = True

    def layer_embeddings(self, prompts: list[str], images: list[Any], layers: list[int],
                         vision_batch: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
        """Prepared inputs and, per ICET layer, the LM's input embeddings with that layer's image features.

        One vision-tower pass yields all N+1 hidden states; each layer's then goes through the
        frozen projector exactly as transformers' get_image_features would (CLS crop for the
        "default" strategy; LLaVA-NeXT tiles packed with image_newline by the model's own
        pack_image_features) and is scattered into the image-token slots as LlavaModel does.
        The tower runs on `vision_batch` images at a time (None: all): it holds every hidden
        state of the images it runs, which the memory plan (icet.memory) bounds.
        """
        for layer in layers:
            self.check_layer(layer)
        inputs = self.prepare(prompts, images)
        base = base_model_of(self.model)
        core, config = base.model, base.config
        input_ids = inputs["input_ids"]
        step = max(1, int(vision_batch or len(prompts)))
        with torch.inference_mode():
            features: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
            for start in range(0, len(prompts), step):
                for layer, projected in self._projected(inputs, slice(start, start + step), layers).items():
                    features[layer].append(projected)
            text_embeds = core.get_input_embeddings()(input_ids)
            slots = (input_ids == config.image_token_id).unsqueeze(-1)
            embeds = {}
            for layer in layers:
                flat = torch.cat(features.pop(layer), dim=0).to(text_embeds.dtype)
                if int(slots.sum()) * text_embeds.shape[-1] != flat.numel():
                    raise IcetError(f"{self.name}: {int(slots.sum())} image tokens but "
                                    f"{flat.numel() // text_embeds.shape[-1]} image features")
                embeds[layer] = text_embeds.masked_scatter(slots, flat)
                del flat
        return inputs, embeds

    def _projected(self, inputs: dict[str, torch.Tensor], rows: slice,
                   layers: list[int]) -> dict[int, torch.Tensor]:
        """Per layer, the projected image features of the prompts in `rows` [tokens, hidden],
        in the order the image-token slots take them."""
        base = base_model_of(self.model)
        core, config = base.model, base.config
        strategy = config.vision_feature_select_strategy
        pixel_values = inputs["pixel_values"][rows]
        if self.model_type == "llava_next":
            from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

            sizes = inputs["image_sizes"][rows]
            tiles = [image_size_to_num_patches(image_size=size, grid_pinpoints=config.image_grid_pinpoints,
                                               patch_size=config.vision_config.image_size)
                     for size in sizes]
            if pixel_values.dim() == 5:
                pixel_values = torch.cat([pv[:n] for pv, n in zip(pixel_values, tiles)], dim=0)
        hidden = core.vision_tower(pixel_values, output_hidden_states=True, return_dict=True).hidden_states
        out = {}
        for layer in layers:
            selected = hidden[layer]
            if strategy == "default":
                selected = selected[:, 1:]
            features = core.multi_modal_projector(selected)
            if self.model_type == "llava_next":
                features, _ = core.pack_image_features(
                    torch.split(features, tiles, dim=0), sizes,
                    vision_feature_select_strategy=strategy, image_newline=core.image_newline)
            out[layer] = torch.cat(list(features), dim=0)
        return out

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of generated token ids [rows, 1] (text tokens only)."""
        return base_model_of(self.model).model.get_input_embeddings()(ids)

    def lm_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, past_key_values: Any) -> torch.Tensor:
        """Last-position next-token logits of the language model, extending `past_key_values`."""
        base = base_model_of(self.model)
        out = base.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         position_ids=position_ids, past_key_values=past_key_values,
                                         use_cache=True)
        return base.lm_head(out.last_hidden_state[:, -1:])[:, -1]

    def lm_sequence(self, model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and last hidden state at the last `keep` positions (VLMAdapter.lm_sequence):
        the image is in the embeddings, so this is LlavaForConditionalGeneration's LM part."""
        base = base_model_of(model)
        out = base.model.language_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                         position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state[:, -keep:]
        return base.lm_head(hidden), hidden
