"""A random-initialised Llama-3.2-11B-Vision, or a smaller Mllama of the same wiring, built from configs.

As icet.bench.vlm7b for LLaVA: the memory benchmarks need the real shapes, not the weights,
so the model is built on the device from MllamaConfig with Llama-3.2-11B-Vision-Instruct's
config.json values (icet.memory.paper), bf16 and SDPA on a GPU, behind the real
MllamaAdapter. The tokenizer is a word tokenizer filled to the text vocabulary (128256) with
`<|image|>` one past it, the real layout (image_token_index = vocab_size: the embedding
has 8 spare rows, the LM head none). Its id is also EOS, which the head cannot emit, so
every response runs to max_new_tokens.

Images are ready-made pixel tensors of every tile ([tiles, 3, S, S], seeded noise) with
the 2x2 tile layout (aspect ratio id 6 of the 8 supported ratios, all 4 tiles used: the
largest vision input), and `MllamaPixelAdapter.prepare` builds what MllamaProcessor would
(ids with one image token, aspect ratio ids and mask, cross-attention mask) without an
image processor: the device image may have no Pillow.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from icet.errors import IcetError
from icet.models.mllama import MllamaAdapter

# (2, 2) in Llama 3.2 Vision's supported_aspect_ratios [[1,1],[1,2],[1,3],[1,4],[2,1],[2,2],
# [3,1],[4,1]] (config.json, icet.memory.paper): 1-based id 6, four tiles.
FOUR_TILES_RATIO_ID = 6
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|image|>{% endif %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> {% endif %}"
)


def sizes(size: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(vision_config, text_config) keyword dicts of `size`: "11b" (the real model), or a
    scaled-down one of the same wiring ("scaled": the memory model's CPU check; "tiny")."""
    from icet.memory.paper import config_of

    real = config_of("meta-llama/Llama-3.2-11B-Vision-Instruct")
    vision, text = dict(real["vision_config"]), dict(real["text_config"])
    if size == "11b":
        return vision, text
    if size == "scaled":  # widths / 8, depths / 4, images 140 px: 100 patches a tile
        vision.update(hidden_size=160, intermediate_size=640, num_hidden_layers=8,
                      num_global_layers=2, attention_heads=2, image_size=140,
                      intermediate_layers_indices=[1, 3, 5, 7], vision_output_dim=160 * 5)
        text.update(hidden_size=512, intermediate_size=1792, num_hidden_layers=10,
                    num_attention_heads=4, num_key_value_heads=1, vocab_size=8000,
                    cross_attention_layers=[3, 8])
        return vision, text
    if size == "tiny":
        vision.update(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_global_layers=2,
                      attention_heads=2, image_size=28, intermediate_layers_indices=[1, 3],
                      vision_output_dim=32 * 3)
        text.update(hidden_size=64, intermediate_size=128, num_hidden_layers=5, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=512, cross_attention_layers=[2])
        return vision, text
    raise IcetError(f"bench: size {size!r} is not one of 11b, scaled, tiny")


class MllamaPixelAdapter(MllamaAdapter):
    """MllamaAdapter whose images are pixel tensors [tiles, 3, S, S] (see the module docstring)."""

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        from icet.models.mllama import cross_attention_mask_for

        self.check_batch(prompts, images)
        tokenizer = self.processor.tokenizer
        encoded = tokenizer(self.chat_texts(prompts), padding=True, return_tensors="pt",
                            add_special_tokens=False)
        ids, mask = encoded["input_ids"].to(self.device), encoded["attention_mask"].to(self.device)
        pixels = torch.stack(list(images))[:, None].to(self.device, self.dtype)  # [B, 1 image, tiles, ...]
        tiles = pixels.shape[2]
        ratio_ids = torch.full((len(prompts), 1), FOUR_TILES_RATIO_ID, dtype=torch.long, device=self.device)
        ratio_mask = torch.ones(len(prompts), 1, tiles, dtype=torch.long, device=self.device)
        cross = cross_attention_mask_for(ids, ratio_mask, base_config(self).image_token_index)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels,
                "aspect_ratio_ids": ratio_ids, "aspect_ratio_mask": ratio_mask,
                "cross_attention_mask": cross}


def base_config(adapter: MllamaAdapter) -> Any:
    from icet.models.base import base_model_of

    return base_model_of(adapter.model).config


def build_tokenizer(vocab_size: int, out_dir: str | os.PathLike) -> Any:
    """vlm7b's word tokenizer with exactly `vocab_size` ids, then `<|image|>` at id vocab_size."""
    from icet.bench.vlm7b import WORDS
    from icet.word_tokenizers import build_word_tokenizer

    base = len(build_word_tokenizer(WORDS, out_dir, chat_template=None))
    fillers = [f"w{i:06d}" for i in range(vocab_size - base)]
    tokenizer = build_word_tokenizer(WORDS + fillers, out_dir, chat_template=None)
    tokenizer.add_tokens(["<|image|>"], special_tokens=True)
    tokenizer.image_token = "<|image|>"
    tokenizer.chat_template = CHAT_TEMPLATE
    if tokenizer.convert_tokens_to_ids("<|image|>") != vocab_size:
        raise IcetError(f"bench tokenizer: <|image|> is not id {vocab_size}")
    return tokenizer


def build_adapter(size: str, device: str, dtype: torch.dtype, workdir: str | os.PathLike,
                  seed: int = 0) -> MllamaPixelAdapter:
    """The random Mllama of `size`, initialised directly on `device` in `dtype`, behind an adapter."""
    from transformers import MllamaConfig, MllamaTextConfig, MllamaVisionConfig

    from icet.bench.vlm7b import TokenizerProcessor
    from icet.models.mllama import IcetMllamaForConditionalGeneration

    vision, text = sizes(size)
    tokenizer = build_tokenizer(int(text["vocab_size"]), workdir)
    image_id = int(text["vocab_size"])
    text.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=image_id)
    config = MllamaConfig(vision_config=MllamaVisionConfig(**vision), text_config=MllamaTextConfig(**text),
                          image_token_index=image_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = IcetMllamaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    model.generation_config.eos_token_id = image_id  # the head has no such column: never emitted
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return MllamaPixelAdapter(model, TokenizerProcessor(tokenizer, 1), name=f"random Llama-3.2-Vision ({size})")


def bench_inputs(adapter: MllamaPixelAdapter, n: int, seed: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """`n` seeded prompts (vlm7b's) and noise tiles [tiles, 3, S, S] at the model's resolution."""
    from icet.bench.vlm7b import WORDS

    vision = base_config(adapter).vision_config
    generator = torch.Generator().manual_seed(seed)
    prompts, images = [], []
    for _ in range(n):
        length = int(torch.randint(8, 25, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        prompts.append(" ".join(WORDS[i] for i in picks))
        images.append(torch.randn(vision.max_num_tiles, 3, vision.image_size, vision.image_size,
                                  generator=generator))
    return prompts, images
