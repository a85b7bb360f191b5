"""Text going into the judges: VLM responses cleaned of chat-template debris, judge inputs rendered.

HarmBench and JailbreakBench users found judges scoring template leftovers ("ASSISTANT:",
"</s>") instead of the answer, so every response is cleaned the same way before any judge
sees it. `clean_response` does exactly this, in order:

1. From the *start* of the text, repeatedly remove whitespace and any of the markers in
   `DEBRIS_MARKERS`, until none is left at the start.
2. From the *end* of the text, the same.
3. Collapse every run of whitespace (spaces, tabs, newlines) to one space.

Markers match case-insensitively ("assistant:", "Assistant :", "ASSISTANT:" are all role
markers; a space before the colon is allowed). Markers in the *middle* of a response are
kept: they are the model's output and a judge should see them.
"""

from __future__ import annotations

import re
from typing import Any

# Role markers of the chat formats our VLMs and judges use (LLaVA-1.5 "USER:/ASSISTANT:",
# Llama-2 "[INST]", Llama-3 and ChatML end-of-turn tokens) plus sentence-piece BOS/EOS.
ROLE_MARKERS = ("assistant", "user", "human", "system")
TOKEN_MARKERS = ("</s>", "<s>", "[INST]", "[/INST]", "<|eot_id|>", "<|im_end|>",
                 "<|im_start|>", "<|end_of_text|>", "<|begin_of_text|>", "<|endoftext|>")
DEBRIS_MARKERS = tuple(f"{role}:" for role in ROLE_MARKERS) + TOKEN_MARKERS

_MARKER = "|".join([rf"{role}\s*:" for role in ROLE_MARKERS]
                   + [re.escape(token) for token in TOKEN_MARKERS])
_LEADING = re.compile(rf"^(?:\s+|{_MARKER})+", re.IGNORECASE)
_TRAILING = re.compile(rf"(?:\s+|{_MARKER})+$", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def clean_response(text: str) -> str:
    """The response without leading/trailing template debris, whitespace runs made one space."""
    if not isinstance(text, str):
        raise TypeError(f"response must be a string, not {type(text).__name__}")
    text = _LEADING.sub("", text)
    text = _TRAILING.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def render_chat(tokenizer: Any, prompt: str, response: str) -> str:
    """A (user, assistant) pair rendered with the tokenizer's own chat template, as text."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return tokenizer.apply_chat_template(messages, tokenize=False)


def encode_rendered(tokenizer: Any, texts: list[str], **kwargs: Any) -> Any:
    """Tokenise rendered texts without adding a second BOS when the template already wrote one.

    Chat templates such as Llama Guard 3's write the BOS token themselves (Llama Guard 3's
    after a leading space: " <|begin_of_text|>..."); tokenising that text with special tokens
    would put a second BOS in front. The result is what `apply_chat_template(tokenize=True)`
    gives, i.e. what the model card runs.
    """
    bos = tokenizer.bos_token
    has_bos = bool(bos) and all(t.lstrip().startswith(bos) for t in texts)
    return tokenizer(texts, add_special_tokens=not has_bos, return_tensors="pt", **kwargs)
