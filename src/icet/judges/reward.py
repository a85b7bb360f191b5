"""Reward-model judge: one scalar per (prompt, response) from a 1-label sequence classifier.

The same code path serves the GPT-2 HH-RLHF reward model (TR in the paper), the DeBERTa
utility reward model and the toy reward model (icet.toy.judges). What differs between them
is only how the pair is written as text, chosen by `input_format` (`INPUT_FORMS`):

- "hh-pair" (judges.reward's default): the text pair the GPT-2 HH reward model's card scores,
  `tokenizer("\\n\\nHuman: {prompt} \\n\\nAssistant:", response)`: the question in the
  HH-RLHF frame with a space before "\\n\\nAssistant:", the answer as the second text
  (huggingface.co/Ray2333/gpt2-large-harmless-reward_model, "Usage"; its authors' evaluation
  code writes it so too: Rewards-in-Context, `Instructions.get_input`, the prompt right-stripped
  then " \\n\\nAssistant:", and `RewardModels.get_reward_model_scores`, `rm_tokenizer(q, r)`).
  GPT-2's tokenizer joins a pair with nothing between, so the answer's first word is
  tokenised without a leading space;
- "hh": one text, `HH_FORMAT` ("\\n\\nHuman: {prompt}\\n\\nAssistant: {response}"), the
  HH-RLHF transcript as written; the toy's reward models were trained on it;
- "auto": the tokenizer's chat template on the (user, assistant) pair if it has one, else "hh";
- "chat": always the chat template (an error if there is none);
- "pair": the tokenizer's text-pair encoding (prompt, response), as OpenAssistant's DeBERTa
  reward models are documented to be called.

Long inputs: the *prompt* is cut from the left until prompt + whole response fit in
`max_length` tokens (`fit_prompt`), because many MR jailbreak prompts alone exceed a reward
model's 512 tokens and right truncation would score the prompt without the response. Only a
response that alone exceeds `max_length` is itself cut (on the right, prompt emptied); both
cases are reported per pair (`score_with_truncation`). Padding is on the right; the models
pool the last non-pad token (GPT-2) or the first token (DeBERTa), both correct with right
padding as long as the pad token is set, which GPT-2 lacks and we set to its EOS.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from icet.errors import IcetError
from icet.judges.base import Judge, judge_dtype, register, schema_default
from icet.judges.text import encode_rendered, render_chat

HH_FORMAT = "\n\nHuman: {prompt}\n\nAssistant: {response}"
HH_PAIR_QUESTION = "\n\nHuman: {prompt} \n\nAssistant:"  # the first text of "hh-pair"
# Each format as the manifest states it (judge_input_records).
INPUT_FORMS = {
    "hh-pair": 'text pair: tokenizer("\\n\\nHuman: {prompt} \\n\\nAssistant:", response) '
               "(the GPT-2 HH reward model's card)",
    "hh": 'one text: "\\n\\nHuman: {prompt}\\n\\nAssistant: {response}"',
    "auto": "the tokenizer's chat template if it has one, else hh",
    "chat": "the tokenizer's chat template on the (user, assistant) pair",
    "pair": "text pair: tokenizer(prompt, response)",
}
INPUT_FORMATS = tuple(INPUT_FORMS)
PAIR_FORMATS = ("pair", "hh-pair")
# What `fit_prompt` had to cut: the prompt's start, or (prompt emptied) the response's end.
CUT_PROMPT, CUT_RESPONSE = "prompt", "response"


def pair_first_text(prompt: str, input_format: str) -> str:
    """The first of the two texts a pair format encodes (the response is the second)."""
    return HH_PAIR_QUESTION.format(prompt=prompt.rstrip()) if input_format == "hh-pair" else prompt


def judge_input_records(judges: dict) -> dict[str, dict]:
    """Per reward-model judge of a config, how it reads a (prompt, response) pair: a choice
    that shifts TR's absolute values, so the manifest states it outside the config dump."""
    return {name: {"input_format": spec["input_format"],
                   "form": INPUT_FORMS.get(spec["input_format"], "?")}
            for name, spec in sorted(judges.items())
            if isinstance(spec, dict) and "input_format" in spec}


def format_reward_input(tokenizer: Any, prompt: str, response: str, input_format: str = "auto") -> str:
    """The text a reward model reads for one pair (not for the pair formats: two texts)."""
    if input_format not in ("auto", "hh", "chat"):
        raise IcetError(f"reward: input_format {input_format!r} has no single-text form")
    if input_format == "chat" or (input_format == "auto" and tokenizer.chat_template):
        if not tokenizer.chat_template:
            raise IcetError("reward: input_format 'chat' but the tokenizer has no chat_template")
        return render_chat(tokenizer, prompt, response)
    return HH_FORMAT.format(prompt=prompt, response=response)


def _n_tokens(tokenizer: Any, prompt: str, response: str, input_format: str) -> int:
    if input_format in PAIR_FORMATS:
        return len(tokenizer(pair_first_text(prompt, input_format), response)["input_ids"])
    text = format_reward_input(tokenizer, prompt, response, input_format)
    return int(encode_rendered(tokenizer, [text])["input_ids"].shape[1])


def fit_prompt(tokenizer: Any, prompt: str, response: str, input_format: str,
               max_length: int) -> tuple[str, str | None]:
    """(prompt, cut): the prompt's longest suffix with which the whole pair fits max_length.

    cut is None (fits as is), CUT_PROMPT (the prompt's start dropped, at a word boundary where
    there is one) or CUT_RESPONSE (even an empty prompt does not fit: the prompt is emptied
    and the encoder then cuts the response's end). The suffix is found by bisection on the
    character where it starts, counting tokens of the formatted pair each time.
    """
    def fits(candidate: str) -> bool:
        return _n_tokens(tokenizer, candidate, response, input_format) <= max_length

    if fits(prompt):
        return prompt, None
    if not fits(""):
        return "", CUT_RESPONSE
    lo, hi = 1, len(prompt)  # prompt[len:] == "" fits; find the smallest start that fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(prompt[mid:]):
            hi = mid
        else:
            lo = mid + 1
    start = lo
    if not prompt[start - 1].isspace():  # cut mid-word: start at the next word instead
        gap = re.search(r"\s+", prompt[start:])
        if gap is not None:
            start += gap.end()
    return prompt[start:].lstrip(), CUT_PROMPT


def fit_prompts(tokenizer: Any, prompts: list[str], responses: list[str], input_format: str,
                max_length: int) -> tuple[list[str], list[str | None]]:
    """`fit_prompt` over a batch: (fitted prompts, cut per pair)."""
    fitted = [fit_prompt(tokenizer, p, r, input_format, max_length)
              for p, r in zip(prompts, responses)]
    return [p for p, _ in fitted], [cut for _, cut in fitted]


def encode_reward_inputs(tokenizer: Any, prompts: list[str], responses: list[str],
                         input_format: str, max_length: int) -> Any:
    """Tokenised batch for the pairs, formatted as described in the module docstring.

    Prompts are cut from the left first (`fit_prompts`); whatever still exceeds max_length
    (a response longer than max_length) is cut on the tokenizer's truncation side (right).
    """
    prompts, _ = fit_prompts(tokenizer, prompts, responses, input_format, max_length)
    limits = dict(padding=True, truncation=True, max_length=max_length)
    if input_format in PAIR_FORMATS:
        firsts = [pair_first_text(p, input_format) for p in prompts]
        return tokenizer(firsts, responses, return_tensors="pt", **limits)
    texts = [format_reward_input(tokenizer, p, r, input_format) for p, r in zip(prompts, responses)]
    return encode_rendered(tokenizer, texts, **limits)


class RewardModel:
    """A reward model loaded once; `score` rates (prompt, response) pairs in batches."""

    def __init__(self, model_dir: str, device: str = "cpu", batch_size: int | None = None,
                 max_length: int | None = None, input_format: str = "auto"):
        """None: the schema's judges.reward defaults. `input_format` "auto" (chat template if
        any, else hh) serves either reward model; the judges' blocks name theirs."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        batch_size = schema_default("reward", "batch_size", batch_size)
        max_length = schema_default("reward", "max_length", max_length)

        if not Path(model_dir, "config.json").exists():
            raise IcetError(f"{model_dir}: no config.json (not a reward model folder)")
        if input_format not in INPUT_FORMATS:
            raise IcetError(f"reward {model_dir}: input_format {input_format!r} not in "
                            f"{', '.join(INPUT_FORMATS)}")
        if batch_size < 1 or max_length < 2:
            raise IcetError(f"reward {model_dir}: batch_size must be >= 1 and max_length >= 2")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise IcetError(f"{model_dir}: tokenizer has neither a pad nor an EOS token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, use_safetensors=True, trust_remote_code=False,
            dtype=judge_dtype(device, "fp32")).to(device).eval()
        if self.model.config.num_labels != 1:
            raise IcetError(f"{model_dir}: reward model must have num_labels=1, "
                            f"has {self.model.config.num_labels}")
        # GPT-2 finds the last real token through config.pad_token_id; unset, batches fail.
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.input_format = input_format

    def encode(self, prompts: list[str], responses: list[str]) -> Any:
        return encode_reward_inputs(self.tokenizer, prompts, responses, self.input_format,
                                    self.max_length)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        return self.score_with_truncation(prompts, responses)[0]

    def score_with_truncation(self, prompts: list[str], responses: list[str]
                              ) -> tuple[list[float], list[str | None]]:
        """(scores, cut per pair: None, CUT_PROMPT or CUT_RESPONSE; see `fit_prompt`)."""
        if len(prompts) != len(responses):
            raise IcetError(f"reward: {len(prompts)} prompts but {len(responses)} responses")
        import torch

        prompts, cuts = fit_prompts(self.tokenizer, list(prompts), list(responses),
                                    self.input_format, self.max_length)
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(prompts), self.batch_size):
                batch = self.encode(prompts[start:start + self.batch_size],
                                    responses[start:start + self.batch_size]).to(self.device)
                logits = self.model(**batch).logits
                scores.extend(float(v) for v in logits[:, 0].float().cpu())
        return scores, cuts


@register
class Reward(Judge):
    """TR: the HH-RLHF reward model's score, and what had to be cut to fit it (`fit_prompt`)."""

    name, title, order = "reward", "reward model", 30
    required = True
    columns = ("reward", "reward_truncated")
    role, metric, toy = "reward", ("tr", "reward", 1.0), "reward"

    def __init__(self, model: RewardModel):
        self.model = model

    @classmethod
    def load(cls, spec: dict, device: str = "cpu") -> "Reward":
        return cls(RewardModel(spec["path"], device, spec["batch_size"], spec["max_length"],
                               spec["input_format"]))

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, list]:
        scores, cuts = self.model.score_with_truncation(prompts, responses)
        n_prompt, n_response = cuts.count(CUT_PROMPT), cuts.count(CUT_RESPONSE)
        if n_prompt or n_response:
            import logging

            logging.getLogger("icet.score").warning(
                "reward: %d of %d distinct pairs over max_length %d: prompt cut from the "
                "left, response whole in %d; response cut too (longer than max_length "
                "alone) in %d", n_prompt + n_response, len(cuts), self.model.max_length,
                n_prompt, n_response)
        return {"reward": scores, "reward_truncated": cuts}
