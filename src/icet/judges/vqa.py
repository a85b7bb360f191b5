"""The VQA utility judge: is the answer right, and what does the utility reward model
(DeBERTa-v3-large-v2 in the paper run; plug-in `utility_reward`) think of it.

Two accuracy measures (config `utility.vqa_metric`):

- "vqa", the paper run's: the standard VQA-v2 accuracy. Each of the 10 human answers is left
  out in turn; the response scores min(#remaining humans who gave it / 3, 1) against the
  other 9; the question's accuracy is the mean of the 10. Response and human answers are
  normalised first as the official evaluation does. Source: GT-Vision-Lab/VQA,
  PythonEvaluationTools/vqaEvaluation/vqaEval.py (commit c4e6a0e4e84b9702d99800d3393652d92b5df224,
  VQAEval.evaluate / processPunctuation / processDigitArticle: the 2017 code, as `master` was
  from 2016 to 2021; a013f00 of 2021 normalises the response only when the humans disagree:
  docs/measures.md says why we keep 2017), re-implemented here:
  * response: newlines and tabs to spaces, stripped; punctuation (below); then lower case,
    split on whitespace, number words zero..ten and "none" to digits, articles a/an/the
    dropped, apostrophe-less contractions ("dont") restored ("don't");
  * punctuation: each of ; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? ! is deleted if it touches a
    space (or the text has a digit,digit comma anywhere), else replaced by a space; then a
    period not followed by a digit is deleted (at most 32 of them: the official passes
    re.UNICODE, 32, as sub's count). Apostrophes and colons are kept;
  * human answers: only the punctuation step, and only when the 10 are not all the same;
  * a match is string equality of the normalised forms.
  Rows must carry all 10 human answers (`answers`, icet.datasets.vqa.build_vqa_set).
- "contains", the toy's: the normalised reference `answer` occurs in the normalised
  response as whole words ("red" is in "the shape is red ." but not in "reddish"). The toy
  LM answers in templated sentences and each toy question has one reference answer, so
  exact match against ten humans does not apply there (toy/toy.yaml says so).
"""

from __future__ import annotations

import re
from typing import Sequence

from icet.errors import IcetError
from icet.io import write_jsonl
from icet.judges.base import Judge, register
from icet.logs import setup_logging
from icet.rows import read_responses
from icet.shards import expand

VQA_METRICS = ("vqa", "contains")

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def normalise_answer(text: str) -> list[str]:
    """VQA-style normalisation into a list of words."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return [_NUMBERS.get(w, w) for w in words if w not in _ARTICLES]


# --- the standard VQA-v2 accuracy (module docstring) ------------------------------------

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")  # the official "(?!<=\d)(\.)(?!\d)": its first group can never match
_VQA_NUMBERS = {"none": "0", **_NUMBERS}
# Contracted forms the official table restores; its keys are each form with ONE apostrophe
# removed ("dont" -> "don't", "couldnt've" and "couldn'tve" -> "couldn't've"). Left out:
# its entries that can never fire or map a form to itself ("Im", "Ive", "Id've" are
# capitalised but words are lower-cased first; "let's", "she's"), and its reversed
# "somebody'd" -> "somebodyd" and the "'ow's'at" family.
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've "
    "hasn't haven't he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am "
    "mightn't mightn't've might've mustn't must've needn't not've o'clock oughtn't shan't "
    "she'd've should've shouldn't shouldn't've somebody'd've somebody'll somebody's someone'd "
    "someone'd've someone'll someone's something'd something'd've something'll that's there'd "
    "there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've "
    "we've weren't what'll what're what's what've when's where'd where's where've who'd "
    "who'd've who'll who's who've why'll why're why's won't would've wouldn't wouldn't've "
    "y'all y'all'll y'all'd've you'd you'd've you'll you're you've").split()


def _one_apostrophe_dropped(form: str) -> list[str]:
    return [form[:i] + form[i + 1:] for i, c in enumerate(form) if c == "'"]


_CONTRACTIONS = {key: form for form in _CONTRACTED for key in _one_apostrophe_dropped(form)}


def vqa_punctuation(text: str) -> str:
    """The official punctuation step (module docstring)."""
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if touches_space or delete_all else " ")
    return _PERIOD.sub("", out, count=32)


def vqa_normalise(text: str) -> str:
    """A response as the official evaluation compares it (module docstring)."""
    text = vqa_punctuation(text.replace("\n", " ").replace("\t", " ").strip())
    words = [_VQA_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_accuracy(response: str, answers: Sequence[str]) -> float:
    """Standard VQA-v2 accuracy in [0, 1] of one response against the human answers."""
    if not answers:
        raise ValueError("no human answers")
    humans = list(answers)
    if len(set(humans)) > 1:
        humans = [vqa_punctuation(a) for a in humans]
    said = vqa_normalise(response)
    scores = []
    for left_out in range(len(humans)):
        matches = sum(1 for j, a in enumerate(humans) if j != left_out and a == said)
        scores.append(min(1.0, matches / 3.0))
    return sum(scores) / len(scores)


# --- the toy's measure -------------------------------------------------------------------

def answer_correct(response: str, answer: str | None) -> bool | None:
    """True if the reference answer's words occur contiguously in the response."""
    if answer is None:
        return None
    target, words = normalise_answer(answer), normalise_answer(response)
    if not target:
        return None
    return any(words[i:i + len(target)] == target for i in range(len(words) - len(target) + 1))


def accuracy_of(row: dict, response: str, metric: str, where: str) -> float | bool | None:
    """One response's accuracy under `metric`: a float in [0, 1] ("vqa") or a bool/None
    ("contains"). A "vqa" row without its human answers stops with `where` named."""
    if metric == "contains":
        return answer_correct(response, row.get("answer"))
    if metric != "vqa":
        raise IcetError(f"utility.vqa_metric: {metric!r} is not one of {', '.join(VQA_METRICS)}")
    answers = row.get("answers")
    if (not isinstance(answers, list) or not answers
            or not all(isinstance(a, str) for a in answers)):
        raise IcetError(f"{where}: key 'answers' must be the list of human answers for the "
                        f"VQA-v2 accuracy (utility.vqa_metric: vqa), got {answers!r}")
    return vqa_accuracy(response, answers)


@register
class UtilityReward(Judge):
    """Table 3's utility reward of a VQA answer; run by rule score_utility, not icet.score."""

    name, title, order = "utility_reward", "utility reward model", 60
    columns = ("utility_reward",)
    role, toy = "utility", "reward"  # the toy's one reward model serves as both

    def __init__(self, model):
        self.model = model

    @classmethod
    def load(cls, spec: dict, device: str = "cpu") -> "UtilityReward":
        from icet.judges.reward import RewardModel

        return cls(RewardModel(spec["path"], device=device, batch_size=spec["batch_size"],
                               max_length=spec["max_length"], input_format=spec["input_format"]))

    def score(self, prompts: list[str], responses: list[str]) -> dict[str, list]:
        return {"utility_reward": [float(v) for v in self.model.score(prompts, responses)]}


def score_utility(response_files: list[str], out: str, reward_path: str, *,
                  metric: str = "vqa", device: str = "cpu", threads: int | None = None,
                  log: str | None = None, **reward: object) -> None:
    """Add `correct` (accuracy under `metric`, see the module docstring) and
    `utility_reward` to every VQA response; write one JSONL.

    `response_files` are shard files or sweep indexes (icet.shards) standing for them.
    `reward` holds judges.utility_reward's knobs (batch_size, max_length, input_format); the
    schema fills what it lacks. `input_format` is how the reward model reads (question,
    response) (icet.judges.reward); "pair" = `tokenizer(question, answer)`, as
    OpenAssistant's DeBERTa reward model card calls it
    (huggingface.co/OpenAssistant/reward-model-deberta-v3-large-v2, "How to use").
    """
    from icet.config import judge_settings
    from icet.judges.text import clean_response
    from icet.runtime import configure, resolve_device

    configure(threads)
    device = resolve_device(device)
    logger = setup_logging(log, "utility")
    spec = judge_settings({"utility_reward": {**reward, "path": reward_path}})["utility_reward"]
    # The response-row contract's check (icet.rows); the files' own order stays (layer, id) as
    # the ids are, not as strings, as these score files have always been written.
    rows = sorted(read_responses(expand(response_files)), key=lambda r: (r["layer"], r["id"]))
    responses = [clean_response(r["response"]) for r in rows]
    # accuracy first: a row without its answers stops before the reward model loads
    correct = [accuracy_of(r, text, metric, f"VQA responses: row id {r.get('id')!r}, layer "
                                            f"{r.get('layer')}") for r, text in zip(rows, responses)]
    from icet.memory.jobs import check_judge_fits

    check_judge_fits("utility_reward", spec, device)  # one line, before loading, if it cannot fit
    judge = UtilityReward.load(spec, device)
    rewards = judge.score([r["prompt"] for r in rows], responses)["utility_reward"]
    for row, accuracy, reward_value in zip(rows, correct, rewards):
        row["correct"] = accuracy
        row["accuracy_metric"] = metric
        row["utility_reward"] = reward_value
    write_jsonl(out, rows)
    logger.info("scored %d VQA responses from %d shards (accuracy: %s)", len(rows),
                len(response_files), metric)
