"""The one interface that the sweep, the judges' callers and L-PPO use to drive a VLM.

An adapter hides how an architecture exits its image encoder early. Everything downstream
asks for "layer l" (ICET-l, l in 0..N, see docs/contracts.md) and never touches
architecture-specific knobs.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch


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


class VLMAdapter(abc.ABC):
    """A loaded VLM (model + processor) that can be run with layer-l image features."""

    name: str
    model: Any  # a transformers PreTrainedModel (possibly wrapped by peft)
    processor: Any
    num_layers: int  # N: the encoder has N layers; ICET layers are 0..N
    default_layer: int  # the layer the model was trained with (LLaVA: N-1)

    def check_layer(self, layer: int) -> int:
        from icet.errors import IcetError

        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= self.num_layers:
            raise IcetError(f"{self.name}: layer {layer!r} out of range 0..{self.num_layers}")
        return layer

    def response_text(self, response_ids: list[int]) -> str:
        """A response's text: special tokens (EOS) dropped, surrounding space stripped."""
        return self.processor.tokenizer.decode(response_ids, skip_special_tokens=True).strip()

    @abc.abstractmethod
    def feature_kwargs(self, layer: int) -> dict[str, Any]:
        """Keyword arguments that make `model(...)`/`model.generate(...)` use layer-l features."""

    @abc.abstractmethod
    def prepare(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        """Chat-format and tokenise prompts (left padded) with their images: model inputs."""

    @abc.abstractmethod
    def generate(self, prompts: list[str], images: list[Any], layer: int,
                 max_new_tokens: int, **generation_kwargs) -> list[Generation]:
        """Greedy (unless told otherwise) responses with layer-l image features."""
