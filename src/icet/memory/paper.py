"""The config.json values of the paper run's models and judges, full size: the memory model's
input where no downloaded folder holds the real file (a downloaded one always wins).

Only what sizes memory is kept (shapes, vocabulary, image geometry), in config.json's own
keys, so the same code reads these and a downloaded config.json. Sources:

- llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 (24 layers, width 1024, 577 positions) and
  Llama-2-7B / Vicuna shapes, vocabulary 32064 (icet.bench.vlm7b quotes the same file).
- llava-hf/llava-v1.6-vicuna-7b-hf: the same towers and projector; any-resolution tiles over
  image_grid_pinpoints [[336,672],[672,336],[672,672],[1008,336],[336,1008]], transformers'
  LlavaNextConfig default, which the llava-hf conversion copies from the original release.
- meta-llama/Llama-3.2-11B-Vision-Instruct: vision_config as quoted from the repo's
  config.json in danbev/learning-ai notes/llama.cpp/llama-3-2-vision.md (image_size 560,
  patch 14, 4 tiles, 32 local + 8 global layers, width 1280, vision_output_dim 7680, the 8
  aspect ratios), image_token_index 128256 and text vocab_size 128256 (same notes), the
  text shapes (Llama 3.1 8B plus 8 cross-attention layers at 3, 8, ..., 38; 40 layers, 8 KV
  heads) as tested against that config in public loaders' suites, and taps 3/7/15/23/30
  (docs/mllama-taps.md).
- meta-llama/Llama-Guard-3-8B: "a Llama-3.1-8B pretrained model, fine-tuned for content
  safety classification" (its model card): Llama 3.1 8B's shapes.
- cais/HarmBench-Llama-2-13b-cls: a Llama-2-13B fine-tune (HarmBench paper): 40 layers,
  width 5120, MLP 13824, vocabulary 32000.
- Ray2333/gpt2-large-harmless-reward_model: gpt2-large (36 layers, width 1280, 1024
  positions, vocabulary 50257) with a one-logit head.
- OpenAssistant/reward-model-deberta-v3-large-v2: microsoft/deberta-v3-large (24 layers,
  width 1024, vocabulary 128100, 256 relative-position buckets).
- Detoxify `original`: bert-base-uncased (12 layers, width 768, vocabulary 30522), 6 labels.
"""

from __future__ import annotations

import copy
from typing import Any

from icet.errors import IcetError

_CLIP_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
             "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
             "projection_dim": 768}
_VICUNA_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
              "vocab_size": 32064, "max_position_embeddings": 4096, "tie_word_embeddings": False}
_LLAMA_31_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False}

CONFIGS: dict[str, dict[str, Any]] = {
    "llava-hf/llava-1.5-7b-hf": {
        "model_type": "llava", "image_token_index": 32000, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "vision_config": _CLIP_336, "text_config": _VICUNA_7B},
    "llava-hf/llava-v1.6-vicuna-7b-hf": {
        "model_type": "llava_next", "image_token_index": 32000, "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu",
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "vision_config": _CLIP_336, "text_config": _VICUNA_7B},
    "meta-llama/Llama-3.2-11B-Vision-Instruct": {
        "model_type": "mllama", "image_token_index": 128256,
        "vision_config": {
            "model_type": "mllama_vision_model", "hidden_size": 1280, "intermediate_size": 5120,
            "num_hidden_layers": 32, "num_global_layers": 8, "attention_heads": 16,
            "image_size": 560, "patch_size": 14, "max_num_tiles": 4, "vision_output_dim": 7680,
            "intermediate_layers_indices": [3, 7, 15, 23, 30],
            "supported_aspect_ratios": [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]]},
        "text_config": {
            "model_type": "mllama_text_model", "hidden_size": 4096, "intermediate_size": 14336,
            "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "cross_attention_layers": [3, 8, 13, 18, 23, 28, 33, 38],
            "max_position_embeddings": 131072, "tie_word_embeddings": False}},
    "meta-llama/Llama-Guard-3-8B": dict(_LLAMA_31_8B),
    "cais/HarmBench-Llama-2-13b-cls": {
        "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40,
        "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False},
    "Ray2333/gpt2-large-harmless-reward_model": {
        "model_type": "gpt2", "n_embd": 1280, "n_layer": 36, "n_head": 20, "n_positions": 1024,
        "vocab_size": 50257, "num_labels": 1},
    "OpenAssistant/reward-model-deberta-v3-large-v2": {
        "model_type": "deberta-v2", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 128100,
        "max_position_embeddings": 512, "position_buckets": 256, "relative_attention": True,
        "position_biased_input": False, "pos_att_type": ["p2c", "c2p"], "share_att_key": True,
        "norm_rel_ebd": "layer_norm", "type_vocab_size": 0, "num_labels": 1},
    "google-bert/bert-base-uncased": {
        "model_type": "bert", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
        "num_attention_heads": 12, "vocab_size": 30522, "max_position_embeddings": 512,
        "type_vocab_size": 2, "num_labels": 6},
}


def config_of(repo: str) -> dict[str, Any]:
    """A copy of `repo`'s config.json values above (IcetError naming the repo if unknown)."""
    if repo not in CONFIGS:
        raise IcetError(f"memory model: no config.json values for {repo!r} (known: "
                        f"{', '.join(CONFIGS)}); download it first, the model reads its config.json")
    return copy.deepcopy(CONFIGS[repo])
