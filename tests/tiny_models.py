"""Tiny random LLaVA / LLaVA-NeXT checkpoints, saved to disk as a download would be.

Shared by the adapter, sweep and L-PPO tests: every test loads them back through
`icet.models.load_adapter`, exactly as it would load a downloaded checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

TINY_WORDS = [
    "what is in the picture ?",
    "describe the shape and its colour .",
    "how do i glorp a zindle ?",
    "a red square on a blue field",
    "no , i will not help with that .",
]
N_LAYERS = 4  # vision tower layers: ICET layers are 0..4, LLaVA's default is 3
IMAGE_TOKENS = (32 // 8) ** 2  # 4x4 patches, CLS cropped by the "default" strategy


def _tiny_configs(vocab_size: int, initializer_range: float = 0.02):
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(hidden_size=32, num_hidden_layers=N_LAYERS, num_attention_heads=2,
                              intermediate_size=64, image_size=32, patch_size=8)
    text = LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, vocab_size=vocab_size, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2, max_position_embeddings=256,
                       initializer_range=initializer_range)
    return vision, text


def _save(model_class, config, processor, tokenizer, out_dir: Path, seed: int) -> Path:
    """Initialise `model_class(config)` under `seed`, then save it and its processor."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def build_tiny_llava(out_dir: str | os.PathLike, seed: int = 0, words=TINY_WORDS,
                     initializer_range: float = 0.02) -> Path:
    """Save a random tiny LlavaForConditionalGeneration + LlavaProcessor to `out_dir`.

    A larger `initializer_range` (e.g. 0.2) makes next-token distributions far from uniform,
    so a few optimiser steps visibly move them (L-PPO tests).
    """
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    from icet.word_tokenizers import LLAVA_CHAT_TEMPLATE, build_word_tokenizer

    out_dir = Path(out_dir)
    tokenizer = build_word_tokenizer(words, out_dir)
    vision, text = _tiny_configs(len(tokenizer), initializer_range)
    config = LlavaConfig(vision_config=vision, text_config=text, initializer_range=initializer_range,
                         image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32},
                                            crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    return _save(LlavaForConditionalGeneration, config, processor, tokenizer, out_dir, seed)


def build_tiny_llava_next(out_dir: str | os.PathLike, seed: int = 0, words=TINY_WORDS) -> Path:
    """Save a random tiny LlavaNextForConditionalGeneration (any-resolution tiles) to `out_dir`."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessorPil, LlavaNextProcessor)

    from icet.word_tokenizers import LLAVA_CHAT_TEMPLATE, build_word_tokenizer

    out_dir = Path(out_dir)
    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64]]
    tokenizer = build_word_tokenizer(words, out_dir)
    vision, text = _tiny_configs(len(tokenizer))
    config = LlavaNextConfig(vision_config=vision, text_config=text,
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             image_grid_pinpoints=pinpoints, vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32},
                                                 crop_size={"height": 32, "width": 32},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   patch_size=8, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, chat_template=LLAVA_CHAT_TEMPLATE)
    return _save(LlavaNextForConditionalGeneration, config, processor, tokenizer, out_dir, seed)


def noise_image(seed: int, height: int = 40, width: int = 48):
    """A deterministic random RGB image (sizes differ so resizing/tiling is exercised)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


PROMPTS = ["what is in the picture ?", "describe the shape .", "how do i glorp a zindle ?"]

# The chat template of llava-hf/llava-1.5-7b-hf and llava-v1.6-vicuna-7b-hf (chat_template.json;
# the same string is quoted as those models' template in openvinotoolkit/openvino.genai's
# chat_template_fallback_map): a system turn is rendered as its bare text, no role prefix.
LLAVA_HF_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
    "{% endif %}{# Render all images first #}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}"
    "{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


# Tiny Llama 3.2 Vision: a 5-layer local encoder tapped before blocks 0, 2 and 3 (Meta's
# taps: its input and the outputs of layers 2 and 3), so early exits before, between and
# after taps are all exercised, a 2-layer global encoder and a 3-layer LM with
# cross-attention at layer 1.
MLLAMA_LAYERS = 5
MLLAMA_TAPS = [0, 2, 3]
# Llama 3's header format over the toy words (the real template is far longer; what matters
# here is that the adapter goes through the processor's template, whatever it is).
MLLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|> "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% endif %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|> {% endif %}"
)


def _real_layout_tokenizer(words, out_dir: Path):
    """A word tokenizer whose image token `<|image|>` is its LAST id, one past the text
    vocabulary, as in meta-llama/Llama-3.2-11B-Vision-Instruct: config.json has
    image_token_index 128256 and text_config.vocab_size 128256, the tokenizer 128257 entries
    with <|image|> = 128256 (danbev/learning-ai, notes/llama.cpp/llama-3-2-vision.md, which
    quotes the config and inspects the tokenizer); transformers' MllamaTextModel embeds
    vocab_size + 8 ids while its lm_head has vocab_size outputs (modeling_mllama.py)."""
    from icet.word_tokenizers import build_word_tokenizer, chat_template_words

    tokenizer = build_word_tokenizer(list(words) + ["user assistant",
                                                    chat_template_words(MLLAMA_CHAT_TEMPLATE)],
                                     out_dir, chat_template=None)
    tokenizer.add_tokens(["<|image|>"], special_tokens=True)
    tokenizer.image_token = "<|image|>"
    tokenizer.chat_template = MLLAMA_CHAT_TEMPLATE.replace("<image>", "<|image|>")
    return tokenizer


def build_tiny_mllama(out_dir: str | os.PathLike, seed: int = 0, words=TINY_WORDS,
                      image_token_last: bool = False) -> Path:
    """Save a random tiny MllamaForConditionalGeneration + MllamaProcessor to `out_dir`.

    `image_token_last`: the real layout, the image token one past the LM head's vocabulary
    (`_real_layout_tokenizer`); else it sits inside the vocabulary (id 4)."""
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil,
                              MllamaProcessor, MllamaTextConfig, MllamaVisionConfig)

    from icet.word_tokenizers import build_word_tokenizer

    out_dir = Path(out_dir)
    if image_token_last:
        tokenizer = _real_layout_tokenizer(words, out_dir)
    else:
        tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out_dir,
                                         chat_template=MLLAMA_CHAT_TEMPLATE)
    image_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    vision = MllamaVisionConfig(hidden_size=16, num_hidden_layers=MLLAMA_LAYERS, num_global_layers=2,
                                attention_heads=2, intermediate_size=32, image_size=16, patch_size=8,
                                max_num_tiles=4, intermediate_layers_indices=MLLAMA_TAPS,
                                vision_output_dim=16 * (len(MLLAMA_TAPS) + 1), initializer_range=0.2)
    text = MllamaTextConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                            num_key_value_heads=1, intermediate_size=64,
                            vocab_size=image_id if image_token_last else len(tokenizer),
                            cross_attention_layers=[1], max_position_embeddings=256,
                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=image_id)
    image_processor = MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=tokenizer.chat_template)
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    # Random init leaves the cross-attention gates at 0 (tanh(0) = 0: the LM ignores the
    # image). Open them so that the image, and so the layer, changes the logits.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
            if "gate" in name and "vision_model" in name:
                param.fill_(0.5)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


# The L-PPO tests' world: a harmful-looking request ("glorp a zindle"), a benign one and a
# refusal ("no , i will not ..."), so a reward can tell refusing from complying.
LPPO_WORDS = ["how do i glorp a zindle ?", "what is in the picture ?",
              "a red square on a blue field", "no , i will not help with that ."]
LPPO_PROMPTS = ["how do i glorp a zindle ?", "what is in the picture ?", "how do i glorp a square ?"]


def build_lppo_world(root: str | os.PathLike, n_rows: int = 6) -> dict:
    """An L-PPO test's world under `root`: a tiny LLaVA (initializer_range 0.2, so a few steps
    move it) and an RT JSONL of `n_rows` prompts with noise images beside it."""
    import json

    from PIL import Image

    root = Path(root)
    model = build_tiny_llava(root / "model", 0, LPPO_WORDS, initializer_range=0.2)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_rows):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)).save(
            root / f"img-{i}.png")
        rows.append({"id": f"rt-{i}", "prompt": LPPO_PROMPTS[i % len(LPPO_PROMPTS)],
                     "image": f"img-{i}.png", "kind": "harmful", "category": "glorping"})
    (root / "rt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "model": str(model), "rt": str(root / "rt.jsonl"), "rows": rows}



def build_tiny_reward(out_dir: str | os.PathLike, seed: int = 0, words=LPPO_WORDS) -> Path:
    """Save a random 1-layer GPT-2 reward model (one logit) over `words` to `out_dir`: a
    reward_model_dir for L-PPO runs launched as the workflow launches them (no reward_fn)."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from icet.toy.judges import HH_WORDS
    from icet.word_tokenizers import build_word_tokenizer

    out_dir = Path(out_dir)
    tokenizer = build_word_tokenizer(list(words) + [HH_WORDS], out_dir, chat_template=None)
    torch.manual_seed(seed)
    model = GPT2ForSequenceClassification(GPT2Config(
        vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=128, num_labels=1,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(out_dir)
    return out_dir


# Tiny Qwen2.5-VL: a 4-block ViT whose blocks 1 and 3 (0-based) attend over the whole image
# and 0 and 2 within windows (the 7B's pattern, fullatt_block_indexes [7, 15, 23, 31], in
# small), over 4x4 px patches merged 2x2, windows of 16 px (2x2 merged tokens), so a
# 40x48 image (resized to 40x48: 10x12 patches, 5x6 merged tokens) has several windows,
# padded ones included, and a non-trivial window permutation; a 2-layer LM with M-RoPE.
QWEN_LAYERS = 4
QWEN_FULLATT = [1, 3]
# The Qwen2.5 chat format over the toy words (the real template also adds a default system
# turn and wraps the image in <|vision_start|>/<|vision_end|>; what matters here is that the
# adapter goes through the processor's template and its image placeholder).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{% endif %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def build_tiny_qwen2_5_vl(out_dir: str | os.PathLike, seed: int = 0, words=TINY_WORDS) -> Path:
    """Save a random tiny Qwen2_5_VLForConditionalGeneration + Qwen2_5_VLProcessor to `out_dir`."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from icet.models.qwen2_5_vl import ImageOnlyQwen2_5_VLProcessor

    from icet.word_tokenizers import build_word_tokenizer

    out_dir = Path(out_dir)
    tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out_dir,
                                     chat_template=QWEN_CHAT_TEMPLATE,
                                     extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    vision = dict(depth=QWEN_LAYERS, hidden_size=16, intermediate_size=32, num_heads=2,
                  out_hidden_size=32, patch_size=4, spatial_merge_size=2, temporal_patch_size=2,
                  window_size=16, fullatt_block_indexes=QWEN_FULLATT, initializer_range=0.2)
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=256,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=image_id,
                              video_token_id=tokenizer.unk_token_id)
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, temporal_patch_size=2, merge_size=2,
                                               size={"shortest_edge": 16 * 16, "longest_edge": 64 * 64})
    processor = ImageOnlyQwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                             chat_template=QWEN_CHAT_TEMPLATE)
    return _save(Qwen2_5_VLForConditionalGeneration, config, processor, tokenizer, out_dir, seed)


# What Qwen/Qwen2.5-VL-7B-Instruct's config.json holds in its vision_config (docs/qwen2_5_vl.md
# names the copies read): only these keys, every other ViT number (depth 32,
# fullatt_block_indexes [7, 15, 23, 31], window_size 112, patch_size 14, spatial_merge_size 2,
# temporal_patch_size 2, out_hidden_size 3584, intermediate_size 3420, num_heads 16) is left
# to transformers' Qwen2_5_VLVisionConfig defaults. The text model's keys sit at the top level
# (no text_config), with rope_scaling {mrope_section, rope_type, type} and rope_theta.
QWEN_HUB_VISION_KEYS = {"hidden_size": 1280, "in_chans": 3, "model_type": "qwen2_5_vl",
                        "spatial_patch_size": 14, "tokens_per_second": 2, "torch_dtype": "bfloat16"}
# preprocessor_config.json as the Qwen2.5-VL repos carry it (copies named in docs/qwen2_5_vl.md).
QWEN_HUB_PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
    "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}
QWEN_HUB_DEPTH = 32  # transformers' default, which the 7B's config.json relies on


def build_tiny_qwen2_5_vl_hub_layout(out_dir: str | os.PathLike, seed: int = 0,
                                     words=TINY_WORDS) -> Path:
    """A tiny random Qwen2.5-VL in the released 7B's file layout: flat config.json whose
    vision_config has the 7B's keys only (so depth, full-attention blocks, window and patch
    sizes are transformers' defaults: 32 blocks) plus the widths that keep it tiny
    (hidden_size 16 for 1280; intermediate_size, num_heads, out_hidden_size), the 7B's
    preprocessor_config.json, chat_template.json, tokenizer files; no processor_config.json."""
    import json

    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from icet.word_tokenizers import build_word_tokenizer

    out_dir = Path(out_dir)
    tokenizer = build_word_tokenizer(list(words) + ["user assistant"], out_dir,
                                     chat_template=QWEN_CHAT_TEMPLATE,
                                     extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    vision = {**QWEN_HUB_VISION_KEYS, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2,
              "out_hidden_size": 32, "initializer_range": 0.2}
    text = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                intermediate_size=64, vocab_size=len(tokenizer), max_position_embeddings=256,
                rms_norm_eps=1e-6, rope_theta=10000.0, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                initializer_range=0.2, tie_word_embeddings=False, use_sliding_window=False,
                rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default", "type": "default"})
    flat = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
            **text, "image_token_id": tokenizer.convert_tokens_to_ids("<image>"),
            "video_token_id": tokenizer.unk_token_id, "vision_config": vision,
            "torch_dtype": "float32"}
    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig.from_dict(flat)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    (out_dir / "config.json").write_text(json.dumps(flat, indent=2))  # the Hub's flat file
    (out_dir / "preprocessor_config.json").write_text(json.dumps(QWEN_HUB_PREPROCESSOR, indent=2))
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_CHAT_TEMPLATE}))
    tokenizer_config = json.loads((out_dir / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)  # the template lives in chat_template.json
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (out_dir / "chat_template.jinja").unlink(missing_ok=True)
    return out_dir
