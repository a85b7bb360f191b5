"""Shapes and parameter counts of the paper's architectures, from a config.json dict.

Pure Python (no torch, no transformers): the workflow sizes its GPU rules at DAG-parse time,
which every cluster job repeats. The counts are transformers' module trees written out
(LLaVA / LLaVA-NeXT: CLIPVisionModel + projector + LlamaForCausalLM; Mllama: its vision
model, projector and cross-attention text model; the judges: Llama, GPT-2, DeBERTa-v2,
BERT), and tests/memory/test_memory_model.py holds them equal to a model built on the meta
device from the same config, at full size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from icet.errors import IcetError


@dataclass(frozen=True)
class Text:
    """A Llama-family decoder (the VLMs' LMs, Llama Guard, HarmBench's classifier)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int  # the LM head's outputs
    cross_layers: tuple[int, ...] = ()  # Mllama's cross-attention layers (no self-attention KV)

    @property
    def self_layers(self) -> int:
        return self.layers - len(self.cross_layers)

    def kv_elements(self, positions: int) -> int:
        """Self-attention keys and values of one row of `positions` positions, all layers."""
        return 2 * self.self_layers * self.kv_heads * self.head_dim * positions


@dataclass(frozen=True)
class Vision:
    """An image encoder: CLIP (LLaVA) or Mllama's tiled local + global encoder."""

    kind: str  # "clip" | "mllama"
    hidden: int
    layers: int  # N: ICET layers are 0..N
    intermediate: int
    heads: int
    image_size: int
    patch: int
    tiles: int = 1  # Mllama: tiles per image (max_num_tiles); CLIP: 1
    global_layers: int = 0
    output_dim: int = 0  # Mllama: hidden x (1 + taps)

    @property
    def positions(self) -> int:
        """Tokens per tile: patches plus the class token."""
        return (self.image_size // self.patch) ** 2 + 1

    @property
    def padded(self) -> int:
        """Mllama pads each tile's tokens to a multiple of 8; CLIP does not pad."""
        return self.positions + (-self.positions % 8) if self.kind == "mllama" else self.positions


@dataclass(frozen=True)
class Arch:
    """What the memory model needs of one checkpoint."""

    model_type: str
    text: Text | None
    vision: Vision | None = None
    params: Mapping[str, int] = field(default_factory=dict)  # by part, summed = the model's
    image_positions: int = 0  # LM positions one image takes at most (Mllama: its one token)
    cross_positions: int = 0  # Mllama: vision tokens every row's cross-attention reads
    encoder: Mapping[str, int] = field(default_factory=dict)  # judges that are encoders

    @property
    def n_params(self) -> int:
        return sum(self.params.values())


def _get(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = config.get(key, default)
    if value is None:
        raise IcetError(f"memory model: config lacks {key!r}")
    return value


def _llama_text(config: Mapping[str, Any]) -> Text:
    heads = int(_get(config, "num_attention_heads"))
    hidden = int(_get(config, "hidden_size"))
    return Text(hidden=hidden, layers=int(_get(config, "num_hidden_layers")), heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate=int(_get(config, "intermediate_size")),
                vocab=int(_get(config, "vocab_size")),
                cross_layers=tuple(int(i) for i in config.get("cross_attention_layers") or ()))


def _decoder_params(text: Text, embed_rows: int, tied: bool = False, cross_norms: bool = False) -> dict[str, int]:
    """Llama decoder layers, embedding, final norm and LM head (no biases).

    Mllama's cross-attention layers have the same projections (k/v read the vision states,
    of the text width) plus q/k RMS norms and two scalar gates, and no self-attention."""
    h, kv, hd, i = text.hidden, text.kv_heads * text.head_dim, text.head_dim, text.intermediate
    q = text.heads * hd
    layer = h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h
    cross = layer + (2 * hd + 2 if cross_norms else 0)
    layers = text.self_layers * layer + len(text.cross_layers) * cross
    return {"embedding": embed_rows * h, "decoder": layers + h,
            "lm_head": 0 if tied else text.vocab * h}


def _clip_params(v: Vision) -> int:
    d, i = v.hidden, v.intermediate
    layer = 4 * (d * d + d) + (d * i + i) + (i * d + d) + 4 * d
    return d + 3 * v.patch ** 2 * d + v.positions * d + 2 * d + v.layers * layer + 2 * d


def _mllama_vision_params(v: Vision, ratios: int) -> int:
    d, i = v.hidden, v.intermediate
    layer = 4 * d * d + (d * i + i) + (i * d + d) + 4 * d
    embeddings = (3 * v.patch ** 2 * d + d  # patch conv (no bias), class embedding
                  + 1 + v.positions * d + (ratios + 1) * v.tiles * v.positions * d  # gated positions
                  + 2 * ((ratios + 1) * v.tiles * d + 1))  # pre/post tile embeddings, gated
    return embeddings + 4 * d + v.layers * layer + v.global_layers * (layer + 2)


def llava_next_image_positions(config: Mapping[str, Any], vision: Vision) -> int:
    """The most LM positions one image takes in LLaVA-NeXT: the base tile's patches, then the
    best grid's patches cropped to the image's aspect ratio, one newline token per row
    (transformers' LlavaNextProcessor count). The maximum is an image exactly the grid's shape."""
    side = vision.image_size // vision.patch
    best = 0
    for height, width in _get(config, "image_grid_pinpoints"):
        rows, cols = height // vision.image_size * side, width // vision.image_size * side
        best = max(best, rows * cols + rows)
    return side * side + best


def arch_of(config: Mapping[str, Any]) -> Arch:
    """An Arch from a config.json dict (a VLM the sweep knows, or a judge)."""
    model_type = config.get("model_type")
    if model_type in ("llava", "llava_next"):
        return _llava(config, model_type)
    if model_type == "mllama":
        return _mllama(config)
    if model_type == "llama":
        text = _llama_text(config)
        return Arch(model_type, text, params=_decoder_params(
            text, text.vocab, tied=bool(config.get("tie_word_embeddings", False))))
    if model_type == "gpt2":
        return _gpt2(config)
    if model_type in ("deberta-v2", "bert"):
        return _encoder(config, model_type)
    raise IcetError(f"memory model: model_type {model_type!r} is not one it knows "
                    "(llava, llava_next, mllama; judges: llama, gpt2, deberta-v2, bert)")


def _llava(config: Mapping[str, Any], model_type: str) -> Arch:
    text = _llama_text(_get(config, "text_config"))
    vc = _get(config, "vision_config")
    vision = Vision("clip", hidden=int(_get(vc, "hidden_size")), layers=int(_get(vc, "num_hidden_layers")),
                    intermediate=int(_get(vc, "intermediate_size")),
                    heads=int(_get(vc, "num_attention_heads")), image_size=int(_get(vc, "image_size")),
                    patch=int(_get(vc, "patch_size")))
    params = _decoder_params(text, text.vocab, tied=bool(config.get("tie_word_embeddings", False)))
    params["vision"] = _clip_params(vision)
    params["projector"] = vision.hidden * text.hidden + text.hidden + text.hidden ** 2 + text.hidden
    if model_type == "llava_next":
        params["projector"] += text.hidden  # image_newline
        image_positions = llava_next_image_positions(config, vision)
    else:
        image_positions = vision.positions - 1  # the "default" strategy crops the class token
    return Arch(model_type, text, vision, params, image_positions=image_positions)


def _mllama(config: Mapping[str, Any]) -> Arch:
    tc, vc = _get(config, "text_config"), _get(config, "vision_config")
    text = _llama_text(tc)
    taps = len(_get(vc, "intermediate_layers_indices"))
    hidden = int(_get(vc, "hidden_size"))
    vision = Vision("mllama", hidden=hidden, layers=int(_get(vc, "num_hidden_layers")),
                    intermediate=int(_get(vc, "intermediate_size")),
                    heads=int(_get(vc, "attention_heads")), image_size=int(_get(vc, "image_size")),
                    patch=int(_get(vc, "patch_size")), tiles=int(_get(vc, "max_num_tiles")),
                    global_layers=int(_get(vc, "num_global_layers")),
                    output_dim=int(vc.get("vision_output_dim") or hidden * (taps + 1)))
    ratios = len(vc.get("supported_aspect_ratios") or [[1, 1], [1, 2], [1, 3], [1, 4], [2, 1],
                                                        [2, 2], [3, 1], [4, 1]])
    # transformers' MllamaTextModel embeds vocab_size + 8 ids (the image token is one past
    # the head's vocabulary), its head has vocab_size outputs.
    params = _decoder_params(text, text.vocab + 8, tied=bool(tc.get("tie_word_embeddings", False)),
                             cross_norms=True)
    params["vision"] = _mllama_vision_params(vision, ratios)
    params["projector"] = vision.output_dim * text.hidden + text.hidden
    return Arch("mllama", text, vision, params, image_positions=1,
                cross_positions=vision.tiles * vision.positions)


def _gpt2(config: Mapping[str, Any]) -> Arch:
    d, layers = int(_get(config, "n_embd")), int(_get(config, "n_layer"))
    i = int(config.get("n_inner") or 4 * d)
    layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * i + i) + (i * d + d)
    vocab, positions = int(_get(config, "vocab_size")), int(_get(config, "n_positions"))
    params = {"embedding": vocab * d + positions * d, "decoder": layers * layer + 2 * d,
              "head": d * int(config.get("num_labels", 1))}
    shape = {"hidden": d, "layers": layers, "intermediate": i, "heads": int(_get(config, "n_head")),
             "vocab": vocab}
    return Arch("gpt2", None, params=params, encoder=shape)


def _encoder(config: Mapping[str, Any], model_type: str) -> Arch:
    """BERT (Detoxify) and DeBERTa-v2 (the utility reward model) sequence classifiers."""
    d, i = int(_get(config, "hidden_size")), int(_get(config, "intermediate_size"))
    layers, vocab = int(_get(config, "num_hidden_layers")), int(_get(config, "vocab_size"))
    labels = int(config.get("num_labels", 2))
    layer = 4 * (d * d + d) + 2 * 2 * d + (d * i + i) + (i * d + d)
    embeddings = vocab * d + 2 * d
    if model_type == "bert":
        embeddings += int(_get(config, "max_position_embeddings")) * d + int(config.get("type_vocab_size", 2)) * d
        encoder = layers * layer
    else:  # DeBERTa-v2: relative position embeddings (+ their LayerNorm) instead of absolute ones
        if config.get("position_biased_input", True):
            embeddings += int(_get(config, "max_position_embeddings")) * d
        if int(config.get("type_vocab_size", 0)) > 0:
            embeddings += int(config["type_vocab_size"]) * d
        buckets = int(config.get("position_buckets", -1))
        span = buckets if buckets > 0 else int(config.get("max_relative_positions", -1) if
                                               int(config.get("max_relative_positions", -1)) > 0
                                               else _get(config, "max_position_embeddings"))
        encoder = layers * layer + 2 * span * d
        if "layer_norm" in str(config.get("norm_rel_ebd", "none")):
            encoder += 2 * d
    params = {"embedding": embeddings, "encoder": encoder,
              "head": (d * d + d) + (d * labels + labels)}
    shape = {"hidden": d, "layers": layers, "intermediate": i,
             "heads": int(_get(config, "num_attention_heads")), "vocab": vocab}
    return Arch(model_type, None, params=params, encoder=shape)
