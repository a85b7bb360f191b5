"""The row contracts (icet.rows): each test set's rules, one line naming file, row and key,
and the same check on the builder's and the sweep's side."""

import json

import pytest
from PIL import Image

from icet.datasets import data_set
from icet.datasets.files import row as source_row, write_sets
from icet.errors import IcetError
from icet.io import write_jsonl
from icet.rows import (SCORE_KEYS, read_dataset, read_responses, read_scores,
                       read_utility_scores, response_row, validate_dataset)


def _row(i, kind="harmful", answer=None, image="images/a.png"):
    return {"id": f"x-{i}", "prompt": f"prompt {i}", "image": image, "kind": kind,
            "category": "c", "answer": answer, "source": "test"}


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "images" / "a.png")
    return tmp_path


def _write(folder, rows, name):
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("testset, bad, message", [
    ("cp", {"kind": "benign"}, "kind 'benign' not one of harmful"),
    ("mr", {"kind": "lookalike"}, "kind 'lookalike' not one of harmful"),
    ("ac", {"kind": "benign"}, "kind 'benign' not one of harmful"),
    ("xstest", {"kind": "harmful"}, "kind 'harmful' not one of lookalike"),
    ("vqa", {"kind": "benign", "answer": None}, "answer must be a non-empty string in a vqa row"),
    ("vqa", {"kind": "benign", "answer": "red", "answers": "red"}, "answers must be a list"),
    ("rt", {"kind": "evil"}, "kind 'evil' not one of harmful, benign, lookalike"),
    ("mr", {"request": " "}, "request must be a non-empty string where present, got ' '"),
    ("mr", {"request": None}, "request must be a non-empty string where present, got None"),
    ("mr", {"request": ["glorp"]}, "request must be a non-empty string where present"),
    ("safebench", {"kind": "benign"}, "kind 'benign' not one of harmful"),
])
def test_each_set_has_its_rules_named_by_file_row_and_key(folder, testset, bad, message):
    good_kind = data_set(testset).kinds[0]  # the rules its data-set plug-in declares
    rows = [_row(0, good_kind, "red"), _row(1, good_kind, "red")]
    rows[1].update(bad)
    path = _write(folder, rows, f"{testset}.jsonl")
    with pytest.raises(IcetError, match=message) as err:
        read_dataset(path, testset)
    assert str(err.value).startswith(f"{path}: row 2 (x-1): ")
    assert "\n" not in str(err.value)
    rows[1] = _row(1, good_kind, "red")
    assert validate_dataset(_write(folder, rows, f"{testset}.jsonl"), testset) == rows


def test_a_set_without_rules_takes_every_kind(folder):
    rows = [_row(0, "harmful"), _row(1, "benign", "red"), _row(2, "lookalike")]
    got, images = read_dataset(_write(folder, rows, "mine.jsonl"), "my-own-set")
    assert got == rows and images == [folder / "images" / "a.png"] * 3


def test_a_request_travels_where_given(folder):
    """`request` is optional: a row may carry the plain request its prompt wraps, or not."""
    rows = [{**_row(0), "request": "glorp the item"}, _row(1)]
    assert validate_dataset(_write(folder, rows, "mr.jsonl"), "mr") == rows


def test_row_numbers_are_lines_of_the_file(folder):
    path = folder / "cp.jsonl"
    path.write_text(json.dumps(_row(0)) + "\n\n" + json.dumps(_row(1, "benign")) + "\n")
    with pytest.raises(IcetError, match=r"cp.jsonl: row 3 \(x-1\): kind"):
        read_dataset(path, "cp")


@pytest.mark.parametrize("image, message", [
    ("../a.png", "has a '..' part"), ("/tmp/a.png", "is absolute"), ("images/b.png", "not found"),
])
def test_image_paths_stay_inside_the_folder_and_exist(folder, image, message):
    path = _write(folder, [_row(0), _row(1, image=image)], "cp.jsonl")
    with pytest.raises(IcetError, match=message) as err:
        read_dataset(path, "cp")
    assert "row 2 (x-1)" in str(err.value)


def test_the_paper_builders_check_with_the_set_rules(folder):
    """A builder hands its set's name to the check: a benign row cannot reach cp.jsonl."""
    rows = [source_row("cp-0", "how to x", "benign", "c", "advbench-cp",
                       folder / "images" / "a.png", "safe", "a.png", "input line 2")]
    out = folder / "out"
    with pytest.raises(IcetError, match=r"cp.jsonl: row 1 \(cp-0\): kind 'benign'") as err:
        write_sets(out, {"cp.jsonl": rows}, {}, logger=None)
    assert str(out) in str(err.value) and not out.exists()


def test_response_rows_carry_the_data_set_row_then_the_sweep_keys():
    row = _row(0)
    got = response_row(row, {"response": "no", "n_prompt_tokens": 3, "n_response_tokens": 1,
                             "finished": True}, model="m", variant="original", testset="cp",
                       layer=4, seed=0)
    assert list(got) == list(row) + ["model", "variant", "testset", "layer", "seed", "response",
                                     "n_prompt_tokens", "n_response_tokens", "finished"]


def test_read_responses_names_the_row(tmp_path):
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"id": "a", "prompt": "p", "response": "r", "layer": 0},
                       {"id": "b", "prompt": "p", "response": 3, "layer": 0}])
    with pytest.raises(IcetError, match=r"r.jsonl: row 2: prompt and response must be strings"):
        read_responses([path])
    write_jsonl(path, [{"id": "a", "prompt": "p", "response": "r", "layer": 0, "request": ""}])
    with pytest.raises(IcetError, match=r"r.jsonl: row 1: request must be a non-empty string"):
        read_responses([path])


def test_read_scores_names_the_row_and_key(tmp_path):
    good = {k: 0 for k in SCORE_KEYS} | {"id": "a", "variant": "original", "refusal": False}
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [good, {**good, "id": "b", "layer": -1}])
    with pytest.raises(IcetError, match=r"s.jsonl: row 2: key 'layer' must be an int >= 0"):
        read_scores([path])
    write_jsonl(path, [good])
    assert read_scores([path]) == [(path, 1, good)]


def test_read_scores_asks_for_the_readers_further_keys(tmp_path):
    row = {k: 0 for k in SCORE_KEYS} | {"id": "a", "variant": "original", "refusal": False}
    path = tmp_path / "s.jsonl"
    write_jsonl(path, [row])
    with pytest.raises(IcetError, match=r"s.jsonl: row 1: missing key\(s\) response"):
        read_scores([path], also=("response", "layer"))
    write_jsonl(path, [row | {"response": "r"}])
    assert read_scores([path], also=("response",)) == [(path, 1, row | {"response": "r"})]


@pytest.mark.parametrize("bad, message", [
    ({"layer": "3"}, "key 'layer' must be an int >= 0"),
    ({"variant": "tuned"}, "key 'variant' must be one of original, aligned"),
    ({"correct": 1.5}, "key 'correct' must be a share in \\[0, 1\\], a bool or null"),
    ({"utility_reward": "high"}, "key 'utility_reward' must be a number or null"),
])
def test_read_utility_scores_names_the_row_and_key(tmp_path, bad, message):
    good = [{"id": "q1", "model": "m", "variant": "original", "layer": 0, "correct": True,
             "utility_reward": None},
            {"id": "q2", "model": "m", "variant": "aligned", "layer": 2, "correct": 0.6,
             "utility_reward": -1.5}]
    path = tmp_path / "u.jsonl"
    write_jsonl(path, good)
    assert read_utility_scores([path]) == good
    write_jsonl(path, good + [good[1] | bad])
    with pytest.raises(IcetError, match=f"u.jsonl: row 3: {message}"):
        read_utility_scores([path])
