"""Tiny random VLMs of the three real architectures, saved as their Hub repos lay them out.

LLaVA-1.5 (llava-hf/llava-1.5-7b-hf: CLIP ViT + Llama, LlavaForConditionalGeneration),
LLaVA-NeXT (llava-hf/llava-v1.6-vicuna-7b-hf: any-resolution tiles over image_grid_pinpoints)
and Llama 3.2 Vision (meta-llama/Llama-3.2-11B-Vision-Instruct: Mllama, a local encoder
tapped at intermediate layers, a global encoder, cross-attention; gated on the Hub). Weights
are sharded (model-0000k-of-0000n.safetensors + model.safetensors.index.json) as the real
repos are; Meta's repos also carry `original/` (consolidated .pth, params.json, tokenizer.model).
"""

from __future__ import annotations

from pathlib import Path

import torch

SHARD = "60KB"  # small enough that every tiny model is written in several shards, as the real ones
LLAVA_LAYERS = 4  # CLIP layers: ICET layers 0..4 (the real 24 scaled down)
MLLAMA_LAYERS = 5  # local encoder layers, tapped after layers 1, 3, 4 (real: 32, taps 3,7,15,23,30)
MLLAMA_TAPS = [0, 2, 3]
MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% endif %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> {% endif %}"
)


def _text_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, vocab_size=vocab_size, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, max_position_embeddings=1024,
                       initializer_range=0.2)


def _vision_config():
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(hidden_size=32, num_hidden_layers=LLAVA_LAYERS, num_attention_heads=2,
                            intermediate_size=64, image_size=32, patch_size=8)


def _save(model, processor, tokenizer, out: Path) -> Path:
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, max_shard_size=SHARD)
    processor.save_pretrained(out)
    return out


def build_llava(out: Path, words: list[str], seed: int = 0) -> Path:
    """llava-hf/llava-1.5-7b-hf's architecture (vision_feature_layer -2, "default" select)."""
    from transformers import (CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    from icet.toy.tokenizer import LLAVA_CHAT_TEMPLATE, build_word_tokenizer

    tokenizer = build_word_tokenizer(words, out)
    config = LlavaConfig(vision_config=_vision_config(), text_config=_text_config(len(tokenizer)),
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default",
                         initializer_range=0.2)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 32},
                                              crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return _save(LlavaForConditionalGeneration(config).eval(), processor, tokenizer, out)


def build_llava_next(out: Path, words: list[str], seed: int = 0) -> Path:
    """llava-hf/llava-v1.6-vicuna-7b-hf's architecture: any-resolution tiles (pinpoints)."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor)

    from icet.toy.tokenizer import LLAVA_CHAT_TEMPLATE, build_word_tokenizer

    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]  # real: 336x(672|1008) grids
    tokenizer = build_word_tokenizer(words, out)
    config = LlavaNextConfig(vision_config=_vision_config(), text_config=_text_config(len(tokenizer)),
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
    processor = LlavaNextProcessor(
        image_processor=LlavaNextImageProcessorPil(size={"shortest_edge": 32},
                                                   crop_size={"height": 32, "width": 32},
                                                   image_grid_pinpoints=pinpoints),
        tokenizer=tokenizer, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    return _save(LlavaNextForConditionalGeneration(config).eval(), processor, tokenizer, out)


def write_meta_original(out: Path, seed: int = 0) -> None:
    """Meta's repos also hold original/ (the non-HF checkpoint): consolidated.pth is pickled
    (never fetched: *.pth is forbidden), params.json and tokenizer.model are matched by the
    model allow patterns (*.json, *.model) and so land in the download."""
    original = out / "original"
    original.mkdir(parents=True, exist_ok=True)
    torch.save({"tok_embeddings.weight": torch.zeros(2, 2)}, original / "consolidated.pth")
    (original / "params.json").write_text('{"dim": 32, "n_layers": 2}\n')
    (original / "tokenizer.model").write_bytes(b"tiktoken-bpe-ranks placeholder\n")


def build_mllama(out: Path, words: list[str], seed: int = 0) -> Path:
    """meta-llama/Llama-3.2-11B-Vision-Instruct's architecture, scaled down."""
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil,
                              MllamaProcessor, MllamaTextConfig, MllamaVisionConfig)

    from icet.toy.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out,
                                     chat_template=MLLAMA_CHAT_TEMPLATE)
    vision = MllamaVisionConfig(hidden_size=16, num_hidden_layers=MLLAMA_LAYERS, num_global_layers=2,
                                attention_heads=2, intermediate_size=32, image_size=16, patch_size=8,
                                max_num_tiles=4, intermediate_layers_indices=MLLAMA_TAPS,
                                vision_output_dim=16 * (len(MLLAMA_TAPS) + 1), initializer_range=0.2)
    text = MllamaTextConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64, vocab_size=len(tokenizer),
                            cross_attention_layers=[1], max_position_embeddings=1024,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    config = MllamaConfig(vision_config=vision, text_config=text,
                          image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    processor = MllamaProcessor(
        image_processor=MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=4),
        tokenizer=tokenizer, chat_template=MLLAMA_CHAT_TEMPLATE)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    # Random init leaves the cross-attention gates at 0 (the LM would ignore the image).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
            if "gate" in name and "vision_model" in name:
                param.fill_(0.5)
    _save(model, processor, tokenizer, out)
    write_meta_original(out, seed)
    return out
