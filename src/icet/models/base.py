"""The one interface that the sweep, the judges' callers and L-PPO use to drive a VLM.

An adapter hides how an architecture exits its image encoder early. Everything downstream
asks for "layer l" (ICET-l, l in 0..N, see docs/contracts.md) and never touches
architecture-specific knobs. Which adapter serves which architecture, its default layer and
where its checkpoint keeps N are in icet.models.registry (torch-free, for the workflow).

An adapter implements `feature_kwargs` (the naive loop: `generate` per layer). It may also
opt in to the fast sweep engine (icet.engine) with `supports_fast_sweep = True` and the
members under "Fast sweep" below; the engine calls nothing else.
"""

from __future__ import annotations

import abc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch

from icet.errors import IcetError


@dataclass
class Generation:
    """One decoded response and the token ids behind it (L-PPO re-scores these ids)."""

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    finished: bool  # EOS reached before max_new_tokens

    def sweep_fields(self) -> dict[str, Any]:
        """What a sweep shard keeps of a generation (docs/contracts.md), whichever engine ran."""
        return {"response": self.text, "n_prompt_tokens": len(self.prompt_ids),
                "n_response_tokens": len(self.response_ids), "finished": bool(self.finished)}


def base_model_of(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def load_image(image: Any) -> Any:
    """A PIL RGB image from a PIL image or a path (the sweep passes paths)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise IcetError(f"{path}: image file not found")
        with Image.open(path) as img:
            return img.convert("RGB")
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    raise IcetError(f"expected a PIL image or a path, got {type(image).__name__}")


# The system prompt LLaVA-1.5 was fine-tuned and evaluated with: haotian-liu/LLaVA,
# llava/conversation.py `conv_vicuna_v1` (selected by `--version v1` in
# scripts/v1_5/finetune.sh and `--conv-mode vicuna_v1` in scripts/v1_5/eval/*.sh). Its
# `conv_llava_v1` says "curious human ... human's questions"; v1.5 did not use that one.
VICUNA_SYSTEM_PROMPT = ("A chat between a curious user and an artificial intelligence assistant. "
                        "The assistant gives helpful, detailed, and polite answers to the user's questions.")

# How an image reaches the processor (config key models[].image_preprocessing):
# "processor" = as the checkpoint's processor does it (llava-hf's CLIP processor resizes the
# short side and centre-crops); "pad" = original LLaVA-1.5's expand2square first (llava/
# mm_utils.py process_images with image_aspect_ratio "pad", scripts/v1_5/finetune.sh): the
# image is centred on a square of the processor's mean colour, int(mean * 255) per channel,
# so nothing is cropped away.
IMAGE_PREPROCESSING = ("processor", "pad")


def expand_to_square(image: Any, colour: tuple[int, ...]) -> Any:
    """The image centred on a square canvas of `colour` (LLaVA's expand2square)."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), colour)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


class VLMAdapter(abc.ABC):
    """A loaded VLM (model + processor) that can be run with layer-l image features.

    Chat formatting, batching, generation and response splitting are shared by every
    transformers VLM we drive; an architecture says how it exits early (`feature_kwargs`)
    and, where its processor differs, how images and text reach it.
    """

    name: str
    model: Any  # a transformers PreTrainedModel (possibly wrapped by peft)
    processor: Any
    model_type: str  # config.json model_type
    num_layers: int  # N: the encoder has N layers; ICET layers are 0..N
    default_layer: int  # the layer the unmodified model uses (icet.models.registry.default_layer)
    system_prompt: str | None = None  # a system turn before the user's, or none
    image_preprocessing: str = "processor"  # IMAGE_PREPROCESSING

    @staticmethod
    def _checked_base(model: Any, name: str | None, expected: type | None = None
                      ) -> tuple[Any, str]:
        """The transformers model under any peft wrapper, and the adapter's name (given, else
        the checkpoint's); IcetError when the model is not an `expected`."""
        base = base_model_of(model)
        name = name or str(getattr(base.config, "name_or_path", "") or type(base).__name__)
        if expected is not None and not isinstance(base, expected):
            raise IcetError(f"{name}: expected an {expected.__name__}, got {type(base).__name__}")
        return base, name

    def _bind(self, model: Any, processor: Any, *, name: str, model_type: str, num_layers: int,
              configured: int | None, what: str, info: dict[str, Any] | None,
              checkpoint_config: Any = None, **details: Any) -> None:
        """What every adapter's constructor sets: the model and processor, N (checked against
        the config's count of `what`), the default layer (icet.models.registry), left padding
        (generation appends on the right) and the info record (`details` added to it)."""
        from icet.models import registry

        self.name, self.model, self.processor, self.model_type = name, model, processor, model_type
        self.num_layers = num_layers
        if configured is not None and num_layers != configured:
            raise IcetError(f"{name}: {what} has {num_layers} layers but its config says "
                            f"{configured}")
        self.default_layer = registry.default_layer(model_type, num_layers, checkpoint_config,
                                                    where=name)
        if getattr(processor, "chat_template", None) is None:
            raise IcetError(f"{name}: the processor has no chat template")
        processor.tokenizer.padding_side = "left"
        self.info = dict(info or {})
        self.info.update(model_type=model_type, num_layers=num_layers,
                         default_layer=self.default_layer, **details)

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.num_layers:
            raise IcetError(f"{self.name}: layer {layer!r} out of range 0..{self.num_layers}")
        return layer

    def response_text(self, response_ids: list[int]) -> str:
        """A response's text: special tokens (EOS) dropped, surrounding space stripped."""
        return self.processor.tokenizer.decode(response_ids, skip_special_tokens=True).strip()

    @abc.abstractmethod
    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        """Keyword arguments that make `model(...)`/`model.generate(...)` use layer-l features."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def eos_token_ids(self) -> set[int]:
        """Every id that ends a response (generation config first: Llama 3 has several)."""
        eos = getattr(base_model_of(self.model).generation_config, "eos_token_id", None)
        if eos is None:
            eos = self.processor.tokenizer.eos_token_id
        return set(eos) if isinstance(eos, (list, tuple)) else {eos}

    def set_prompting(self, system_prompt: str | None = None,
                      image_preprocessing: str = "processor") -> None:
        """The system prompt and image preprocessing every prompt gets (config: models[])."""
        if image_preprocessing not in IMAGE_PREPROCESSING:
            raise IcetError(f"{self.name}: image_preprocessing {image_preprocessing!r} is not one of "
                            f"{', '.join(IMAGE_PREPROCESSING)}")
        if image_preprocessing == "pad" and self.model_type != "llava":
            raise IcetError(f"{self.name}: image_preprocessing 'pad' is LLaVA-1.5's; a "
                            f"{self.model_type} processor tiles the image itself (use 'processor')")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise IcetError(f"{self.name}: system_prompt must be a string or null")
        self.system_prompt = system_prompt or None
        self.image_preprocessing = image_preprocessing
        self.info.update(system_prompt=self.system_prompt, image_preprocessing=image_preprocessing)

    def chat_texts(self, prompts: list[str]) -> list[str]:
        """The chat-formatted prompts: one user turn with an image part, then the text, after
        a system turn when the model has a system prompt (the chat template renders it)."""
        system = ([{"role": "system", "content": [{"type": "text", "text": self.system_prompt}]}]
                  if self.system_prompt else [])
        conversations = [system + [{"role": "user", "content": [{"type": "image"},
                                                                {"type": "text", "text": prompt}]}]
                         for prompt in prompts]
        texts = [self.processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
                 for conv in conversations]
        if self.system_prompt and not all(self.system_prompt in text for text in texts):
            raise IcetError(f"{self.name}: the chat template drops the system turn, so "
                            "system_prompt would be lost")
        return texts

    # What the processor gets besides the chat texts (an architecture may differ here).
    processor_kwargs: dict[str, Any] = {}

    def processor_images(self, images: list[Any]) -> list[Any]:
        """The images as the processor takes them: one PIL image per prompt."""
        return [self.fit_image(load_image(i)) for i in images]

    def fit_image(self, image: Any) -> Any:
        """The image after `image_preprocessing` ("pad": on a square of the processor's mean)."""
        if self.image_preprocessing != "pad":
            return image
        mean = self.processor.image_processor.image_mean
        return expand_to_square(image, tuple(int(m * 255) for m in mean))

    def check_batch(self, prompts: list[str], images: list[Any]) -> None:
        """One image per prompt, and at least one prompt."""
        if len(prompts) != len(images):
            raise IcetError(f"{self.name}: {len(prompts)} prompts but {len(images)} images")
        if not prompts:
            raise IcetError(f"{self.name}: empty batch")

    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Chat-format and tokenise prompts (left padded) with their images: model inputs."""
        self.check_batch(prompts, images)
        inputs = self.processor(text=self.chat_texts(prompts), images=self.processor_images(images),
                                padding=True, return_tensors="pt", **self.processor_kwargs)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return inputs

    def logits(self, prompts: list[str], images: list[Any], layer: int | None = None) -> torch.Tensor:
        """Next-token logits [batch, seq, vocab] of the prepared prompts with layer-l features.

        `layer=None` runs the model untouched (no kwarg), which is what the default layer must
        reproduce. Position ids skip the left padding, as `generate` does.
        """
        kwargs = {} if layer is None else self.feature_kwargs(layer)
        inputs = self.prepare(prompts, images)
        mask = inputs["attention_mask"]
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
        with torch.inference_mode():
            out = self.model(**inputs, position_ids=position_ids, **kwargs)
        return out.logits.float()

    def generate(self, prompts: list[str], images: list[Any], layer: int,
                 max_new_tokens: int, **generation_kwargs) -> list[Generation]:
        kwargs = self.feature_kwargs(layer)
        inputs = self.prepare(prompts, images)
        settings = {"do_sample": False, "max_new_tokens": int(max_new_tokens), **generation_kwargs}
        with torch.inference_mode():
            sequences = self.model.generate(**inputs, **kwargs, **settings)
            if not torch.is_tensor(sequences):
                sequences = sequences.sequences
        return self.split_generations(inputs, sequences.cpu())

    def split_generations(self, inputs: dict[str, torch.Tensor],
                          sequences: torch.Tensor) -> list[Generation]:
        """Prompt ids without padding; response ids up to and including the first EOS.

        Rows that stopped early are filled with pad after their EOS, so cutting at the first
        EOS (rather than at the first pad) also survives a model that emits the pad id.
        """
        eos_ids = self.eos_token_ids
        input_ids = inputs["input_ids"].cpu()
        mask = inputs["attention_mask"].cpu().bool()
        prompt_len = input_ids.shape[1]
        results = []
        for row, (ids, keep) in enumerate(zip(input_ids, mask)):
            new = sequences[row, prompt_len:].tolist()
            end = next((i for i, t in enumerate(new) if t in eos_ids), None)
            response = new if end is None else new[:end + 1]
            results.append(Generation(text=self.response_text(response), prompt_ids=ids[keep].tolist(),
                                      response_ids=response, finished=end is not None))
        return results

    # ---- Fast sweep (icet.engine) -----------------------------------------------------------
    # An adapter that sets `supports_fast_sweep` implements the first three members; the
    # engine decodes greedily with them, token-identical to `generate` (tests/models/test_engine.py).
    supports_fast_sweep: ClassVar[bool] = False

    def layer_embeddings(self, prompts: list[str], images: list[Any], layers: list[int],
                         vision_batch: int | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[int, Any]]:
        """Prepared inputs (`prepare`) and, per ICET layer, the LM's prefill inputs: the input
        embeddings [rows, T, hidden], or a dict with "inputs_embeds" and further per-row
        tensors (row axis first) that the engine stacks, drops finished rows from and passes
        to every `lm_forward` call as keywords. The vision encoder runs on at most
        `vision_batch` images at a time (None: all of them), as the memory plan says."""
        raise NotImplementedError(f"{type(self).__name__} has no fast sweep path")

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings of generated token ids [rows, 1] (text tokens only)."""
        raise NotImplementedError(f"{type(self).__name__} has no fast sweep path")

    def lm_forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor, past_key_values: Any, **row_inputs: torch.Tensor
                   ) -> torch.Tensor:
        """Last-position next-token logits [rows, vocab], extending `past_key_values`.
        `position_ids` [rows, T] skip the left padding, as `generate`'s do."""
        raise NotImplementedError(f"{type(self).__name__} has no fast sweep path")

    def new_cache(self) -> Any:
        """An empty KV cache for the language model."""
        from transformers import DynamicCache

        return DynamicCache(config=base_model_of(self.model).config.get_text_config())

    # Per-row inputs of `layer_embeddings` that `lm_forward` reads at the prefill only: the
    # engine drops them after it (Mllama's vision states, cached by its cross-attention).
    prefill_only_inputs: ClassVar[tuple[str, ...]] = ()

    def memory_arch(self) -> Any:
        """The memory model's view of this checkpoint (icet.memory.arch), from its config;
        IcetError for an architecture it does not model."""
        from icet.memory.arch import arch_of

        return arch_of(base_model_of(self.model).config.to_dict())

    def prompt_positions(self, prompts: list[str]) -> list[int]:
        """LM positions each prompt takes, at most: its chat text's tokens, its image token
        counted as the most positions an image takes (`memory_arch().image_positions`; the
        processor expands it to that many or fewer). Tokenizes text only: no image is read."""
        image = self.memory_arch().image_positions
        add_special = self.processor_kwargs.get("add_special_tokens", True)
        ids = self.processor.tokenizer(self.chat_texts(prompts), add_special_tokens=add_special)["input_ids"]
        return [len(row) - 1 + image for row in ids]

    # ---- L-PPO across layers (icet.lppo.rollout) --------------------------------------------
    # With the fast-sweep members and `lm_sequence`, L-PPO runs the samples of a rollout
    # together whatever their layers: each row carries its own layer's LM inputs
    # (`layer_rows`), computed once per rollout since the encoder and projector are frozen.
    # The row inputs that run along the prompt's tokens, and on which axis: a minibatch trims
    # them to its own longest prompt.
    token_axes: ClassVar[dict[str, int]] = {"inputs_embeds": 1}

    @property
    def supports_layer_rows(self) -> bool:
        """Whether L-PPO can batch samples of different layers in one forward."""
        return self.supports_fast_sweep and type(self).lm_sequence is not VLMAdapter.lm_sequence

    def layer_rows(self, prompts: list[str], images: list[Any], layers: list[int]
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Prepared inputs and the LM's inputs of row i with layer `layers[i]`'s features
        (`layer_embeddings` of each layer present, one vision pass, then row i's entries of
        its own layer; ordinary tensors, so a backward pass may save them)."""
        if len(layers) != len(prompts):
            raise IcetError(f"{self.name}: {len(prompts)} prompts but {len(layers)} layers")
        distinct = sorted(set(layers))
        inputs, per_layer = self.layer_embeddings(prompts, images, distinct)
        per_layer = {layer: row_inputs_of(per_layer[layer]) for layer in distinct}
        rows = {name: torch.stack([per_layer[layer][name][i] for i, layer in enumerate(layers)])
                for name in per_layer[distinct[0]]}
        return inputs, rows

    def lm_sequence(self, model: Any, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, keep: int, **row_inputs: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-token logits [rows, keep, vocab] and the LM's last hidden state [rows, keep,
        hidden] at the last `keep` positions of whole sequences (no cache, gradients flow),
        run by `model` (the adapter's model, its peft wrapper or a copy). `row_inputs` are
        `layer_rows`' further entries for the prompt's positions; the adapter extends those
        that run along the tokens over the positions after the prompt."""
        raise NotImplementedError(f"{type(self).__name__} cannot batch L-PPO across layers")


def row_inputs_of(layer_inputs: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One layer's model inputs as a dict with "inputs_embeds" (a bare tensor is just that)."""
    if torch.is_tensor(layer_inputs):
        return {"inputs_embeds": layer_inputs}
    if "inputs_embeds" not in layer_inputs:
        raise IcetError(f"layer_embeddings returned {sorted(layer_inputs)} without 'inputs_embeds'")
    return dict(layer_inputs)


def hook_block_inputs(blocks: Any, states: list) -> list:
    """Forward pre-hooks that store block j's input in `states[j]` on every call (the state
    after j blocks); returns their handles, for the caller to remove."""
    def block_input(index):
        def hook(module, args, kwargs):
            states[index] = args[0] if args else kwargs["hidden_states"]
        return hook

    return [block.register_forward_pre_hook(block_input(j), with_kwargs=True)
            for j, block in enumerate(blocks)]


@contextmanager
def early_exit(layers: Any, layer: int | None) -> Iterator[None]:
    """While inside: the blocks after the first `layer` (None = all run) return their input.

    Forward hooks leave transformers' code untouched and are removed when the call ends, so
    no state outlives a call and deep copies (L-PPO's reference model) behave the same.
    """
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
