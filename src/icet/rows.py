"""Row contracts: what the stages' JSONL files hold, and the one check of each.

Three kinds of rows travel through the DAG (docs/contracts.md has the tables):

- data-set rows, written by the builders (icet.datasets, icet.toy.datasets) and read by the
  sweep (and L-PPO, the organism study): `read_dataset` / `check_dataset_row`;
- response rows, written by the sweep (`response_row`) and read by the scorers:
  `read_responses`;
- score rows, written by the scorers and read by the report: `read_scores` (safety scores:
  icet.stats.load_scores, the examples exhibit, XSTest over-refusal) and
  `read_utility_scores` (VQA utility scores: icet.report.utility).

Why one module: the data-set rules used to be checked twice (a builder-side and a sweep-side
check, with different wording), and every reader named its own required keys. A bad row stops
with one line naming the file, the row (its line number in the file; blank lines count) and
the key.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

from icet.errors import IcetError
from icet.inputs import check_image, relative_path
from icet.io import read_jsonl

# ---------------------------------------------------------------------------- data sets

DATASET_KEYS = ("id", "prompt", "image", "kind", "category", "answer", "source")
# Optional keys: `answers` (VQA-v2: every human answer) and `request` (the plain request a
# jailbreak prompt wraps: check_request).

# What each test set's rows may be (which kinds, whether a reference answer is required) is
# declared by the source that builds it (icet.datasets: its DataSet). A set not registered
# there (a test's own) gets the rules every set shares (any of icet.datasets.base.KINDS).


def _set_rules(testset: str | None) -> tuple[Any, tuple[str, ...]]:
    """(the set's DataSet or None, the row kinds it may hold)."""
    from icet.datasets.base import KINDS, data_set

    rules = data_set(testset) if testset else None
    return rules, (rules.kinds if rules else KINDS)


def numbered_rows(path: str | os.PathLike, required: Iterable[str] = ()) -> list[tuple[int, dict]]:
    """(line number, row) for every row of a JSONL file; the numbers are those errors name."""
    path = Path(path)
    rows = read_jsonl(path, required=required)  # malformed rows / missing keys stop here
    lines = [n for n, line in enumerate(path.read_bytes().decode("utf-8").splitlines(), 1)
             if line.strip()]
    return list(zip(lines, rows))


def _where(path, number: int, row: dict) -> str:
    """`<file>: row <n> (<id>)`, or without the id when it is not a usable string."""
    id_ = row.get("id")
    return f"{path}: row {number} ({id_})" if isinstance(id_, str) and id_.strip() \
        else f"{path}: row {number}"


def check_request(row: dict, where: str) -> None:
    """`request`, where a row has one: the plain request its jailbreak `prompt` wraps (MR:
    JailbreakV-28K's redteam_query), which a judge declaring it is shown instead of the
    prompt (icet.judges.base.Judge.prompt_keys), so it must be real text."""
    if "request" in row and (not isinstance(row["request"], str) or not row["request"].strip()):
        raise IcetError(f"{where}: request must be a non-empty string where present, "
                        f"got {row['request']!r}")


def check_dataset_row(row: dict, where: str, testset: str | None = None) -> None:
    """Keys and types of one data-set row (no file access); IcetError names `where` and the key.

    `testset` adds that set's rules (icet.datasets): which kinds, whether `answer` is required.
    """
    missing = [k for k in DATASET_KEYS if k not in row]
    if missing:
        raise IcetError(f"{where}: missing key(s) {', '.join(missing)}")
    id_ = row["id"]
    if not isinstance(id_, str) or not id_.strip():
        raise IcetError(f"{where}: id must be a non-empty string, got {id_!r}")
    for key in ("prompt", "category", "source", "image"):
        if not isinstance(row[key], str) or (key in ("prompt", "image") and not row[key].strip()):
            raise IcetError(f"{where}: {key} must be a non-empty string, got {row[key]!r}")
    check_request(row, where)
    rules, kinds = _set_rules(testset)
    if row["kind"] not in kinds:
        raise IcetError(f"{where}: kind {row['kind']!r} not one of {', '.join(kinds)}"
                        + (f" (a {testset} row)" if rules else ""))
    answer = row["answer"]
    if rules and rules.answer_required and (not isinstance(answer, str) or not answer.strip()):
        raise IcetError(f"{where}: answer must be a non-empty string in a {testset} row "
                        f"(utility is scored against it), got {answer!r}")
    if answer is not None and not isinstance(answer, str):
        raise IcetError(f"{where}: answer must be a string or null, got {answer!r}")
    if "answers" in row and (not isinstance(row["answers"], list)
                             or not all(isinstance(a, str) for a in row["answers"])):
        raise IcetError(f"{where}: answers must be a list of strings, got {row['answers']!r}")
    relative_path(row["image"], where)  # relative, inside the data set's folder only


def read_dataset(path: str | os.PathLike, testset: str | None = None,
                 ) -> tuple[list[dict[str, Any]], list[Path]]:
    """A data-set JSONL's rows, checked, and their images' paths.

    Checks: the file has rows; every row passes `check_dataset_row`; ids are unique; every
    image exists under the file's folder and decodes in full (icet.inputs.check_image: a
    corrupt image stops here, before any model is loaded, not mid-sweep; each distinct image
    once, CP shows one to ten prompts). Rows keep their `image` as written (relative), which
    is what responses carry on; the second list resolves those paths for loading.
    """
    path = Path(path)
    numbered = numbered_rows(path)
    if not numbered:
        raise IcetError(f"{path}: data set has no rows")
    seen: dict[str, int] = {}
    images: list[Path] = []
    decoded: set[Path] = set()
    for number, row in numbered:
        where = _where(path, number, row)
        check_dataset_row(row, where, testset)
        if row["id"] in seen:
            raise IcetError(f"{path}: row {number}: duplicate id {row['id']!r} "
                            f"(first at row {seen[row['id']]})")
        seen[row["id"]] = number
        image = path.parent / relative_path(row["image"], where)
        if image not in decoded:
            if not image.is_file():
                raise IcetError(f"{where}: image {row['image']} not found (looked in {path.parent})")
            check_image(image, f"{where}: image {row['image']}")
            decoded.add(image)
        images.append(image)
    return [row for _, row in numbered], images


def validate_dataset(path: str | os.PathLike, testset: str | None = None) -> list[dict]:
    """`read_dataset`'s rows: the builders' check of a file they wrote."""
    return read_dataset(path, testset)[0]


# ---------------------------------------------------------------------------- responses

# What the sweep adds to each data-set row, in this order (the shards' bytes depend on it).
SWEEP_KEYS = ("model", "variant", "testset", "layer", "seed")
GENERATION_KEYS = ("response", "n_prompt_tokens", "n_response_tokens", "finished")
# What the scorers need of a response row (more is carried through untouched).
RESPONSE_KEYS = ("id", "prompt", "response", "layer")


def response_row(row: dict, generation: dict, *, model: str, variant: str, testset: str,
                 layer: int, seed: int) -> dict:
    """A data-set row joined with one ICET-`layer` generation (GENERATION_KEYS)."""
    record = dict(row)
    record.update(model=model, variant=variant, testset=testset, layer=layer, seed=int(seed),
                  **generation)
    return record


def read_responses(response_files: list[str]) -> list[dict]:
    """All response rows, sorted by (layer, id); a duplicate (layer, id) is an error."""
    rows, seen = [], {}
    for path in response_files:
        for number, row in numbered_rows(path, required=RESPONSE_KEYS):
            if not isinstance(row["layer"], int) or isinstance(row["layer"], bool):
                raise IcetError(f"{path}: row {number}: layer must be an integer")
            if not isinstance(row["response"], str) or not isinstance(row["prompt"], str):
                raise IcetError(f"{path}: row {number}: prompt and response must be strings")
            check_request(row, f"{path}: row {number}")
            key = (row["layer"], str(row["id"]))
            if key in seen:
                raise IcetError(f"{path}: row {number}: layer {key[0]} id {key[1]} "
                                f"already in {seen[key]}")
            seen[key] = path
            rows.append(row)
    return sorted(rows, key=lambda r: (r["layer"], str(r["id"])))


# ---------------------------------------------------------------------------- scores

VARIANTS = ("original", "aligned")  # table/plot order: the model before, then after L-PPO
# What the report needs of a safety score row (icet.stats.load_scores).
SCORE_KEYS = ("id", "model", "variant", "testset", "layer", "kind", "unsafe", "toxicity",
              "reward", "refusal")
# What the utility report needs of a VQA utility score row (icet.report.utility).
UTILITY_SCORE_KEYS = ("id", "model", "variant", "layer")


def score_number(path, number: int, key: str, value, allowed: str, lo=None, hi=None):
    """Check one optional numeric score field; return it as float or None."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        raise IcetError(f"{path}: row {number}: key '{key}' must be {allowed}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise IcetError(f"{path}: row {number}: key '{key}' must be {allowed}, got {value!r}")
    return float(value)


def binary_columns() -> tuple[str, ...]:
    """The ASR judges' 1 / 0 / null columns (Llama Guard's `unsafe`, and any further ASR
    judge's the config names: icet.judges.base)."""
    from icet.judges.base import registry

    return tuple(cls.metric[1] for cls in registry().values() if cls.role == "asr" and cls.metric)


def _check_cell(path, number: int, row: dict) -> None:
    """The keys that place a score row in a table cell: its layer and variant."""
    layer = row["layer"]
    if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise IcetError(f"{path}: row {number}: key 'layer' must be an int >= 0, got {layer!r}")
    if row["variant"] not in VARIANTS:
        raise IcetError(f"{path}: row {number}: key 'variant' must be one of "
                        f"{', '.join(VARIANTS)}, got {row['variant']!r}")


def check_score_row(path, number: int, row: dict) -> None:
    """Types of the score-row keys the report reads (the numeric ones: `score_number`)."""
    _check_cell(path, number, row)
    for column in binary_columns():
        if row.get(column) not in (0, 1, None):
            raise IcetError(f"{path}: row {number}: key '{column}' must be 1, 0 or null, "
                            f"got {row[column]!r}")
    if row["refusal"] not in (True, False, None):
        raise IcetError(f"{path}: row {number}: key 'refusal' must be a bool, "
                        f"got {row['refusal']!r}")


def read_scores(score_files: Iterable[str | os.PathLike],
                also: Iterable[str] = ()) -> list[tuple[Path, int, dict]]:
    """(file, line number, row) of every score row, each checked by `check_score_row`;
    `also`: further keys the reader needs (e.g. the response text)."""
    required = SCORE_KEYS + tuple(k for k in also if k not in SCORE_KEYS)
    out = []
    for path in [Path(p) for p in score_files]:
        for number, row in numbered_rows(path, required=required):
            check_score_row(path, number, row)
            out.append((path, number, row))
    return out


def read_utility_scores(score_files: Iterable[str | os.PathLike]) -> list[dict]:
    """Every VQA utility score row (icet.judges.vqa writes them), checked: its cell keys, and
    `correct` (a share in [0, 1], a bool, or null) and `utility_reward` (a number or null)."""
    out = []
    for path in [Path(p) for p in score_files]:
        for number, row in numbered_rows(path, required=UTILITY_SCORE_KEYS):
            _check_cell(path, number, row)
            if not isinstance(row.get("correct"), bool):
                score_number(path, number, "correct", row.get("correct"),
                             "a share in [0, 1], a bool or null", 0.0, 1.0)
            score_number(path, number, "utility_reward", row.get("utility_reward"),
                         "a number or null")
            out.append(row)
    return out
