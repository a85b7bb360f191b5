"""A random-initialised LLaVA-1.5-7B, or a tiny model of the same architecture, built from configs.

The GPU benchmarks need the real model's shapes (memory traffic, KV cache, kernel sizes), not
its weights, and no weights ever reach the device machine. So the model is built on the
device straight from LlavaConfig (CLIP ViT-L/14-336 + Llama-2-7B shapes, as
llava-hf/llava-1.5-7b-hf), bf16 and SDPA on a GPU, with a word tokenizer (`tokenizers`,
the LLaVA-1.5 chat template) whose vocabulary is filled to the model's 32064 ids so every
emitted id decodes to a word.

Two choices make the numbers comparable run to run:
- EOS is set to id `vocab_size`, which the model can never emit: every response runs to
  max_new_tokens, so both engines decode exactly the same number of tokens.
- Images are ready-made pixel tensors (seeded noise at the model's resolution) and
  `PixelAdapter.prepare` skips the image processor: the device image may have no Pillow,
  and a random model's pixels carry no meaning. Text goes through the chat template and
  the tokenizer exactly as in LlavaAdapter, with `<image>` expanded to one slot per patch.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from icet.errors import IcetError
from icet.models.llava import LlavaAdapter

# llava-hf/llava-1.5-7b-hf's config.json (vision: CLIP ViT-L/14-336; text: Llama-2-7B / Vicuna).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "7b": {
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                   "projection_dim": 768, "hidden_act": "quick_gelu"},
        "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                 "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    },
    # Widths / 8, depths / 4-8, 112 px images: the memory model's check on a CPU
    # (tests/memory), where every term still weighs as it does at full size.
    "scaled": {
        "vision": {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 6,
                   "num_attention_heads": 2, "image_size": 112, "patch_size": 14,
                   "projection_dim": 96, "hidden_act": "quick_gelu"},
        "text": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 4008,
                 "max_position_embeddings": 4096, "rms_norm_eps": 1e-5},
    },
    # Same classes and wiring, sized so a CPU test runs a whole benchmark in seconds.
    "tiny": {
        "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                   "num_attention_heads": 2, "image_size": 28, "patch_size": 14,
                   "projection_dim": 32, "hidden_act": "quick_gelu"},
        "text": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 512,
                 "max_position_embeddings": 1024, "rms_norm_eps": 1e-5},
    },
}

# Prompt words: ordinary requests, so prompt lengths look like the test sets' (8-24 words).
WORDS = ("please describe explain how to make build find get write a an the this that picture "
         "image photo object scene in on of with for about detail step by and what is shown "
         "here someone could use it safely quickly without anyone noticing tell me why where "
         "who when list give some ideas plan").split()


class TokenizerProcessor:
    """The processor surface the adapters and L-PPO use (tokenizer, chat template), no images.

    A LlavaProcessor needs an image processor, and transformers' CLIP image processors need
    Pillow or torchvision, neither of which the device image is known to have.
    """

    def __init__(self, tokenizer: Any, image_tokens: int):
        self.tokenizer = tokenizer
        self.chat_template = tokenizer.chat_template
        self.image_tokens = image_tokens  # placeholders per image: one per patch (CLS cropped)

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(conversation, **kwargs)


class PixelAdapter(LlavaAdapter):
    """LlavaAdapter whose images are pixel tensors [3, S, S] (see the module docstring)."""

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        self.check_batch(prompts, images)
        tokenizer = self.processor.tokenizer
        slot = tokenizer.image_token
        texts = [t.replace(slot, slot * self.processor.image_tokens) for t in self.chat_texts(prompts)]
        inputs = {k: v.to(self.device) for k, v in tokenizer(texts, padding=True, return_tensors="pt").items()
                  if k in ("input_ids", "attention_mask")}
        inputs["pixel_values"] = torch.stack(list(images)).to(self.device, self.dtype)
        return inputs


def build_tokenizer(vocab_size: int, out_dir: str | os.PathLike) -> Any:
    """A word tokenizer with exactly `vocab_size` ids: WORDS, then filler words `w00000`..."""
    from icet.word_tokenizers import build_word_tokenizer

    base = len(build_word_tokenizer(WORDS, out_dir))
    if base > vocab_size:
        raise IcetError(f"bench tokenizer: {base} base tokens exceed vocab_size {vocab_size}")
    fillers = [f"w{i:05d}" for i in range(vocab_size - base)]
    tokenizer = build_word_tokenizer(WORDS + fillers, out_dir)
    if len(tokenizer) != vocab_size:
        raise IcetError(f"bench tokenizer: {len(tokenizer)} tokens, wanted {vocab_size}")
    return tokenizer


def llava_config(size: str, tokenizer: Any) -> Any:
    """LlavaConfig of `size` ("7b" or "tiny"): LLaVA-1.5's projector, layer -2, CLS crop."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    if size not in SIZES:
        raise IcetError(f"bench: size {size!r} is not one of {', '.join(SIZES)}")
    shapes = SIZES[size]
    text = LlamaConfig(**shapes["text"], pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=shapes["text"]["vocab_size"],
                       tie_word_embeddings=False)
    return LlavaConfig(vision_config=CLIPVisionConfig(**shapes["vision"]), text_config=text,
                       image_token_id=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", tie_word_embeddings=False)


def build_adapter(size: str, device: str, dtype: torch.dtype, workdir: str | os.PathLike,
                  seed: int = 0) -> PixelAdapter:
    """The random model of `size`, initialised directly on `device` in `dtype`, behind an adapter.

    `workdir` holds the tokenizer files only (the weights are never written).
    """
    from transformers import LlavaForConditionalGeneration

    tokenizer = build_tokenizer(SIZES[size]["text"]["vocab_size"], workdir)
    config = llava_config(size, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    never = config.text_config.vocab_size  # an id the LM head cannot produce: no early EOS
    model.generation_config.eos_token_id = never
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    vision = config.vision_config
    processor = TokenizerProcessor(tokenizer, (vision.image_size // vision.patch_size) ** 2)
    return PixelAdapter(model, processor, name=f"random LLaVA-1.5 ({size})")


def bench_inputs(adapter: PixelAdapter, n: int, seed: int = 0) -> tuple[list[str], list[torch.Tensor]]:
    """`n` seeded prompts of 8-24 words and noise pixel tensors at the model's resolution."""
    generator = torch.Generator().manual_seed(seed)
    size = adapter.model.config.vision_config.image_size
    prompts, images = [], []
    for _ in range(n):
        length = int(torch.randint(8, 25, (1,), generator=generator))
        picks = torch.randint(0, len(WORDS), (length,), generator=generator).tolist()
        prompts.append(" ".join(WORDS[i] for i in picks))
        images.append(torch.randn(3, size, size, generator=generator))
    return prompts, images


def decode_bytes_per_step(adapter: PixelAdapter, rows: int, context: float) -> tuple[int, int]:
    """(weight bytes, KV-cache bytes) one greedy decode step must read from memory.

    Weights: every LM parameter except the embedding table (a step reads `rows` rows of it),
    plus the LM head. KV: keys and values of every layer for `rows` rows of `context`
    positions on average. The vision tower and projector are not touched while decoding.
    """
    base = adapter.model
    lm = base.model.language_model
    embed = lm.get_input_embeddings().weight
    weights = sum(p.numel() * p.element_size() for p in lm.parameters())
    weights += sum(p.numel() * p.element_size() for p in base.lm_head.parameters())
    weights -= embed.numel() * embed.element_size()
    text = base.config.text_config
    heads = text.num_key_value_heads or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    itemsize = torch.tensor([], dtype=adapter.dtype).element_size()
    kv = int(2 * text.num_hidden_layers * heads * head_dim * itemsize * rows * context)
    return weights, kv


def add_model_arguments(parser: Any) -> None:
    """The options every 7B benchmark shares: which size and which device."""
    parser.add_argument("--size", choices=("7b", "tiny"), default="7b",  # "scaled": tests/memory
                        help="LLaVA-1.5-7B shapes, or a tiny model of the same architecture")
    parser.add_argument("--device", default="auto", help="'auto' = the GPU if there is one")
