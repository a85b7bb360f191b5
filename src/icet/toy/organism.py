"""The toy model organism's architecture: a real LLaVA, only tiny.

`LlavaForConditionalGeneration` built from `LlavaConfig(CLIPVisionConfig, LlamaConfig)`, so
every downstream stage (sweep, judges, L-PPO) drives it through the same transformers
classes and the same `vision_feature_layer` knob as LLaVA-1.5. Only the sizes shrink, so the
whole pipeline trains and sweeps on a CPU laptop; the layer count stays >= 12 so a layer-wise
sweep still has a curve to show.
"""

from __future__ import annotations

import os
from typing import Any

from icet.errors import IcetError
from icet.toy import settings


def resolve_arch(arch: dict | None, where: str = "arch") -> dict[str, Any]:
    """`arch` with the defaults of the toy schema's `arch` (sizes and the reason for each)
    where a key is absent; a typo, a too-shallow encoder or an image that does not split
    into whole patches stops the run there."""
    return settings.fill("arch", arch, where)


def num_image_tokens(arch: dict | None = None) -> int:
    """Placeholder tokens per image: patches only, since the "default" strategy drops CLS."""
    arch = resolve_arch(arch)
    return (arch["image_size"] // arch["patch_size"]) ** 2


def load_tokenizer(tokenizer):
    """A tokenizer object as given, or loaded from its folder."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer))
    return tokenizer


def vision_config(arch: dict | None = None):
    """The CLIPVisionConfig of the toy encoder."""
    from transformers import CLIPVisionConfig

    arch = resolve_arch(arch)
    return CLIPVisionConfig(
        hidden_size=arch["vision_hidden"],
        intermediate_size=arch["vision_intermediate"],
        num_hidden_layers=arch["vision_layers"],
        num_attention_heads=arch["vision_heads"],
        image_size=arch["image_size"],
        patch_size=arch["patch_size"],
        num_channels=3,
        projection_dim=arch["vision_hidden"],
    )


def text_config(arch: dict | None, tokenizer):
    """The LlamaConfig of the toy LM; vocabulary and special ids come from the tokenizer."""
    from transformers import LlamaConfig

    arch = resolve_arch(arch)
    tokenizer = load_tokenizer(tokenizer)
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch["lm_hidden"],
        intermediate_size=arch["lm_intermediate"],
        num_hidden_layers=arch["lm_layers"],
        num_attention_heads=arch["lm_heads"],
        num_key_value_heads=arch["lm_heads"],
        max_position_embeddings=arch["max_positions"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,  # as Llama-2 / Vicuna
    )


def llava_config_from_parts(vision_cfg, text_cfg, tokenizer, arch: dict | None = None):
    """Join a vision and a text config the way LLaVA-1.5 does (stage 2 joins saved parts)."""
    from transformers import LlavaConfig

    arch = resolve_arch(arch)
    tokenizer = load_tokenizer(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise IcetError("tokenizer: no <image> token; build it with build_word_tokenizer")
    n_patches = (vision_cfg.image_size // vision_cfg.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_id=image_token_id,
        projector_hidden_act=arch["projector_hidden_act"],
        vision_feature_select_strategy="default",
        vision_feature_layer=arch["vision_feature_layer"],
        image_seq_length=n_patches,
        pad_token_id=tokenizer.pad_token_id,
    )


def toy_llava_config(arch: dict | None, tokenizer):
    """The full LlavaConfig of the toy organism (`tokenizer`: object or folder)."""
    tokenizer = load_tokenizer(tokenizer)
    return llava_config_from_parts(vision_config(arch), text_config(arch, tokenizer), tokenizer, arch)


def build_image_processor(arch: dict | None = None):
    """CLIP preprocessing at the toy resolution (PIL backend: no torchvision needed)."""
    from transformers import CLIPImageProcessorPil

    arch = resolve_arch(arch)
    size = arch["image_size"]
    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def build_processor(tokenizer_dir, arch: dict | None = None):
    """A LlavaProcessor that expands <image> into one placeholder per patch, as LLaVA-1.5."""
    from transformers import LlavaProcessor

    arch = resolve_arch(arch)
    tokenizer = load_tokenizer(tokenizer_dir)
    return LlavaProcessor(
        image_processor=build_image_processor(arch),
        tokenizer=tokenizer,
        patch_size=arch["patch_size"],
        vision_feature_select_strategy="default",
        chat_template=tokenizer.chat_template,
        image_token=tokenizer.image_token,
        num_additional_image_tokens=1,  # CLIP's CLS token (then dropped by "default")
    )


def arch_of(config) -> dict[str, Any]:
    """The arch dict a LlavaConfig was built from (inverse of toy_llava_config)."""
    v, t = config.vision_config, config.text_config
    return {
        "vision_layers": v.num_hidden_layers, "vision_hidden": v.hidden_size,
        "vision_heads": v.num_attention_heads, "vision_intermediate": v.intermediate_size,
        "image_size": v.image_size, "patch_size": v.patch_size,
        "lm_hidden": t.hidden_size, "lm_layers": t.num_hidden_layers,
        "lm_heads": t.num_attention_heads, "lm_intermediate": t.intermediate_size,
        "max_positions": t.max_position_embeddings,
        "projector_hidden_act": config.projector_hidden_act,
        "vision_feature_layer": config.vision_feature_layer,
    }


def check_arch(config, arch: dict | None, where: str) -> None:
    """Stop if a loaded model is not the one `arch` (plus defaults) describes."""
    wanted, actual = resolve_arch(arch), arch_of(config)
    wrong = [f"{k}={actual[k]!r} (arch says {wanted[k]!r})" for k in wanted if actual[k] != wanted[k]]
    if wrong:
        raise IcetError(f"{where}: model does not match arch: {', '.join(wrong)}")


def default_layer(config) -> int:
    """The ICET layer l the model was trained with (docs/contracts.md), from its config
    (icet.models.registry.default_layer, as for every model)."""
    from icet.models.registry import default_layer as registry_default

    return registry_default("llava", config.vision_config.num_hidden_layers, config, where="config")
