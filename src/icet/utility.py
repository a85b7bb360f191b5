"""Utility on VQA: does the response contain the reference answer, and what does the
utility reward model (DeBERTa-v3-large-v2 in the paper run) think of it.

Accuracy for free-form answers: the normalised reference answer must occur in the
normalised response as whole words ("red" is in "the shape is red ." but not in
"reddish"). Normalisation as VQA's evaluation: lower case, punctuation and articles
removed, number words mapped to digits.
"""

from __future__ import annotations

import re

from icet.io import read_jsonl, write_jsonl
from icet.logs import setup_logging
from icet.shards import expand

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def normalise_answer(text: str) -> list[str]:
    """VQA-style normalisation into a list of words."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return [_NUMBERS.get(w, w) for w in words if w not in _ARTICLES]


def answer_correct(response: str, answer: str | None) -> bool | None:
    """True if the reference answer's words occur contiguously in the response."""
    if answer is None:
        return None
    target, words = normalise_answer(answer), normalise_answer(response)
    if not target:
        return None
    return any(words[i:i + len(target)] == target for i in range(len(words) - len(target) + 1))


def score_utility(response_files: list[str], out: str, reward_path: str, *,
                  batch_size: int = 16, max_length: int = 512, input_format: str = "pair",
                  device: str = "cpu", threads: int | None = None, log: str | None = None) -> None:
    """Add `correct` and `utility_reward` to every VQA response; write one JSONL.

    `response_files` are shard files or sweep indexes (icet.shards) standing for them.
    `input_format` is how the reward model reads (question, response) (icet.judges.reward);
    "pair" = `tokenizer(question, answer)`, as OpenAssistant's DeBERTa reward model card
    calls it (huggingface.co/OpenAssistant/reward-model-deberta-v3-large-v2, "How to use").
    """
    from icet.judges.reward import RewardModel
    from icet.judges.text import clean_response
    from icet.runtime import configure, resolve_device

    configure(threads)
    device = resolve_device(device)
    logger = setup_logging(log, "utility")
    rows = [row for path in expand(response_files) for row in read_jsonl(path)]
    rows.sort(key=lambda r: (r["layer"], r["id"]))
    responses = [clean_response(r["response"]) for r in rows]
    model = RewardModel(reward_path, device=device, batch_size=batch_size, max_length=max_length,
                        input_format=input_format)
    rewards = model.score([r["prompt"] for r in rows], responses)
    for row, response, reward in zip(rows, responses, rewards):
        row["correct"] = answer_correct(response, row.get("answer"))
        row["utility_reward"] = float(reward)
    write_jsonl(out, rows)
    logger.info("scored %d VQA responses from %d shards", len(rows), len(response_files))
