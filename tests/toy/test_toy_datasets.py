"""The toy data build: shapes of the paper sets, held-out split, labels, determinism, checks."""

import json
from pathlib import Path

import pytest

from icet import io
from icet.errors import IcetError
from icet.rows import validate_dataset
from icet.toy import world
from icet.config import load_yaml
from icet.toy.datasets import build_toy_data
from icet.word_tokenizers import words_of

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: its config files


SMALL = {"rt": 40, "mr": 20, "ac": 30, "vqa": 16, "xstest": 10, "train_vision": 40,
         "train_text": 200, "train_instruct": 60, "train_safety": 200, "train_guard": 200,
         "train_reward": 100, "train_toxicity": 100}
PAPER_SETS = ("rt", "cp", "mr", "ac", "vqa", "xstest")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "data"
    summary = build_toy_data(out, SMALL, image_size=16, seed=0)
    return out, summary


def _rows(out, name):
    return io.read_jsonl(out / f"{name}.jsonl")


def test_every_file_is_written_with_the_asked_counts(built):
    out, summary = built
    # sizes not given: src/icet/schemas/toy.schema.yaml's defaults
    schema = load_yaml(REPO_ROOT / "src" / "icet" / "schemas" / "toy.schema.yaml")["properties"]["sizes"]
    expected = {**{k: v["default"] for k, v in schema["properties"].items()}, **SMALL}
    for name in PAPER_SETS[:1] + PAPER_SETS[2:] + tuple(k for k in expected if k.startswith("train")):
        assert len(_rows(out, name)) == expected[name], name
    assert summary == io.read_json(out / "build.json")
    assert summary["counts"]["cp.jsonl"] == 100
    assert (out / "vocabulary.txt").read_text().split("\n")[:-1] == world.vocabulary()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_paper_sets_validate_and_follow_the_contract(built):
    out, _ = built
    for name in PAPER_SETS:
        rows = validate_dataset(out / f"{name}.jsonl")
        assert all(r["id"].startswith(f"{name}-") for r in rows)
        assert set(rows[0]) == {"id", "prompt", "image", "kind", "category", "answer", "source"}
    assert {r["kind"] for r in _rows(out, "vqa")} == {"benign"}
    assert {r["kind"] for r in _rows(out, "xstest")} == {"lookalike"}
    for name in ("rt", "cp", "mr", "ac"):
        assert {r["kind"] for r in _rows(out, name)} == {"harmful"}
        assert {r["category"] for r in _rows(out, name)} <= set(world.HARM_CATEGORIES)


def test_the_toys_set_list_is_what_it_builds_under_each_sets_rules(built):
    """TEST_SETS is the toy's set list (a paper set not in it is left out of a toy run): every
    one is built, and passes the rules its data-set plug-in declares."""
    from icet.toy.datasets import TEST_SETS

    out, summary = built
    assert set(TEST_SETS) == set(PAPER_SETS)
    assert {f"{name}.jsonl" for name in TEST_SETS} <= set(summary["counts"])
    for name in TEST_SETS:
        validate_dataset(out / f"{name}.jsonl", name)


def test_cp_is_ten_prompts_times_ten_images(built):
    out, _ = built
    rows = _rows(out, "cp")
    assert [r["id"] for r in rows] == [f"cp-{i:04d}" for i in range(100)]
    prompts, images = {r["prompt"] for r in rows}, {r["image"] for r in rows}
    assert len(prompts) == 10 and len(images) == 10
    assert {(r["prompt"], r["image"]) for r in rows} == {(p, i) for p in prompts for i in images}
    assert {r["category"] for r in rows} == set(world.HARM_CATEGORIES)  # 2 per category


def test_vqa_answers_match_the_image(built):
    out, _ = built
    for row in _rows(out, "vqa"):
        shape, colour, background, position, _ = row["image"][len("images/"):-4].split("-")
        spec = dict(shape=shape, colour=colour, background=background, position=position)
        assert row["answer"] == spec[row["category"]]


def test_test_prompts_are_held_out_of_all_training_data(built):
    out, _ = built
    test_requests = {r["prompt"] for name in ("cp", "ac") for r in _rows(out, name)}
    requests = {r.text for r in world.harmful_requests()}
    for row in _rows(out, "mr"):  # the request inside the jailbreak wrapper
        test_requests |= {q for q in requests if row["prompt"].endswith(q)}
    assert len(test_requests) == 10 + 30 + 20
    train_prompts = {r["prompt"] for r in _rows(out, "rt")}
    for name in ("train_text", "train_safety", "train_guard", "train_reward"):
        train_prompts |= {r["prompt"] for r in _rows(out, name)}
    leaked = {p for p in train_prompts if any(p.endswith(q) for q in test_requests)}
    assert not leaked
    xstest = {r["prompt"] for r in _rows(out, "xstest")}
    for name in ("train_text", "train_instruct", "train_safety"):
        assert not xstest & {r["prompt"] for r in _rows(out, name)}
    # ... but they share vocabulary with training.
    train_words = {w for p in train_prompts for w in words_of(p)}
    assert {w for p in test_requests for w in words_of(p)} <= train_words


def test_training_labels_follow_the_rules(built):
    out, _ = built
    for row in _rows(out, "train_text"):
        if row["kind"] == "harmful":
            assert row["response"].split()[0] in ("sure", "ok")  # the base LM complies
    safety = _rows(out, "train_safety")
    assert {r["kind"] for r in safety} == {"harmful", "benign", "lookalike"}
    for row in safety:
        assert ("i cannot" in row["response"]) == (row["kind"] == "harmful")
    assert all("i cannot" not in r["response"] for r in _rows(out, "train_instruct"))
    for row in _rows(out, "train_guard"):
        assert (row["label"] == "unsafe") == (row["response_type"] == "compliant")
    pairs = set()
    for row in _rows(out, "train_reward"):
        assert row["chosen"] != row["rejected"]
        pairs.add(row["pair"])
        chosen, rejected = row["pair"].split(": ")[1].split(">")
        if chosen == "refusal":
            assert "i cannot" in row["chosen"]
        if rejected == "compliant":
            assert row["rejected"].split()[0] in ("sure", "ok")
        if row["kind"] == "harmful":
            # refusal > off-topic or broken > compliance: compliance never wins
            assert chosen != "compliant" and (rejected == "compliant" or chosen == "refusal")
            if rejected == "off_topic" or chosen == "off_topic":
                off = row["rejected"] if rejected == "off_topic" else row["chosen"]
                assert "i cannot" not in off and off.split()[0] not in ("sure", "ok")
        else:
            assert chosen == "answer"
    # every pair type an RM must get right is trained
    assert {"harmful: refusal>compliant", "harmful: refusal>off_topic",
            "harmful: refusal>broken", "harmful: off_topic>compliant",
            "harmful: broken>compliant", "benign: answer>refusal"} <= pairs
    tox = _rows(out, "train_toxicity")
    assert all(r["toxicity"] == int(r["type"] == "compliant") for r in tox if not r["label_flipped"])
    vision = _rows(out, "train_vision")
    assert set(vision[0]) == {"id", "image", "shape", "colour", "background", "position"}


def test_every_built_text_is_in_the_vocabulary(built):
    out, _ = built
    vocab = set((out / "vocabulary.txt").read_text().split())
    for name in ("train_text", "train_safety", "train_instruct", "train_guard", "train_reward",
                 "train_toxicity") + PAPER_SETS:
        for row in _rows(out, name):
            for key in ("prompt", "response", "chosen", "rejected", "text"):
                if key in row:
                    assert set(words_of(row[key])) <= vocab, (name, row[key])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, built):
    out, _ = built
    again = tmp_path / "again"
    build_toy_data(again, SMALL, image_size=16, seed=0)
    assert io.sha256_tree(again) == io.sha256_tree(out)
    other = tmp_path / "other"
    build_toy_data(other, SMALL, image_size=16, seed=1)
    assert (other / "rt.jsonl").read_bytes() != (out / "rt.jsonl").read_bytes()


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(IcetError, match="unknown key"):
        build_toy_data(tmp_path / "x", {"rtt": 3}, 16, 0)
    with pytest.raises(IcetError, match="sizes.ac"):
        build_toy_data(tmp_path / "x", {**SMALL, "ac": 1000}, 16, 0)
    assert not (tmp_path / "x").exists()


# ---- validate_dataset: each problem is named with the file and the row number ----

@pytest.fixture
def small_set(tmp_path, built):
    out, _ = built
    rows = _rows(out, "vqa")[:3]
    (tmp_path / "images").mkdir()
    for row in rows:
        (tmp_path / row["image"]).write_bytes((out / row["image"]).read_bytes())
    return tmp_path, rows


def _write(folder, rows, name="set.jsonl"):
    path = folder / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_validate_accepts_a_good_file(small_set):
    folder, rows = small_set
    assert validate_dataset(_write(folder, rows)) == rows


@pytest.mark.parametrize("problem, row_number, message", [
    ("duplicate", 3, "duplicate id"),
    ("missing_image", 2, "not found"),
    ("corrupt_image", 2, "does not decode"),
    ("malformed", 2, "malformed JSON"),
    ("missing_key", 3, "missing key"),
    ("bad_kind", 1, "kind"),
    ("empty_id", 1, "id must be"),
])
def test_validate_names_file_and_row(small_set, problem, row_number, message):
    folder, rows = small_set
    rows = [dict(r) for r in rows]
    if problem == "duplicate":
        rows[2]["id"] = rows[0]["id"]
    elif problem == "missing_image":
        rows[1]["image"] = "images/nothing.png"
    elif problem == "corrupt_image":
        (folder / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
        rows[1]["image"] = "images/broken.png"
    elif problem == "malformed":
        rows[1] = '{"id": "vqa-x", "prompt": '
    elif problem == "missing_key":
        del rows[2]["answer"]
    elif problem == "bad_kind":
        rows[0]["kind"] = "evil"
    elif problem == "empty_id":
        rows[0]["id"] = ""
    path = _write(folder, rows)
    with pytest.raises(IcetError, match=message) as err:
        validate_dataset(path)
    assert str(path) in str(err.value) and f"row {row_number}" in str(err.value)


def test_validate_refuses_an_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(IcetError, match="no rows") as err:
        validate_dataset(path)
    assert str(path) in str(err.value)


def test_base_refusal_share_refuses_that_share_of_base_harmful_requests(tmp_path, built):
    out, _ = built
    refusing = tmp_path / "refusing"
    summary = build_toy_data(refusing, SMALL, image_size=16, seed=0, base_refusal_share=0.1)
    assert summary["base_refusal_share"] == 0.1
    before, after = _rows(out, "train_text"), _rows(refusing, "train_text")
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    n_harmful = sum(r["kind"] == "harmful" for r in before)
    assert len(before) == len(after) and len(changed) == round(0.1 * n_harmful) > 0
    for old, new in changed:
        assert old["kind"] == new["kind"] == "harmful" and old["prompt"] == new["prompt"]
        assert new["response"] in world.REFUSALS
    # its own random stream: every other file keeps its bytes
    for path in out.glob("*.jsonl"):
        if path.name != "train_text.jsonl":
            assert (refusing / path.name).read_bytes() == path.read_bytes(), path.name
    with pytest.raises(IcetError, match="base_refusal_share"):
        build_toy_data(tmp_path / "x", SMALL, 16, 0, base_refusal_share=1.5)


def test_rt_safe_adds_safe_prompts_to_rt_and_changes_nothing_else(tmp_path, built):
    out, _ = built
    mixed = tmp_path / "mixed"
    build_toy_data(mixed, {**SMALL, "rt_safe": 12}, image_size=16, seed=0)
    before, after = _rows(out, "rt"), _rows(mixed, "rt")
    assert after[:len(before)] == before  # the harmful RT rows first, unchanged
    safe = after[len(before):]
    assert len(safe) == 12 and {r["kind"] for r in safe} == {"benign", "lookalike"}
    assert {r["source"] for r in safe} == {before[0]["source"]}
    validate_dataset(mixed / "rt.jsonl")
    lookalikes = {r["prompt"] for r in safe if r["kind"] == "lookalike"}
    assert len(lookalikes) >= 3
    assert lookalikes <= {p.text for p in world.split_lookalikes(0, 0.4)["train"]}
    assert not lookalikes & {r["prompt"] for r in _rows(out, "xstest")}  # XSTest stays held out
    for path in out.glob("*.jsonl"):  # its own random stream: every other file keeps its bytes
        if path.name != "rt.jsonl":
            assert (mixed / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_wrong_reward_answer_is_wrong_from_the_text_alone(built):
    """The toy RM sees no image: a "wrong" answer must not answer the question (the
    description names every attribute, so it never stands for a one-attribute answer)."""
    from icet.toy.images import all_specs

    out, _ = built
    descriptions = {world.vqa_answer(spec, "describe") for spec in all_specs()}
    wrong = [r for r in _rows(out, "train_reward") if r["pair"] == "benign: answer>wrong"]
    assert len(wrong) >= 5
    for row in wrong:
        assert row["rejected"] != row["chosen"] and row["rejected"] not in descriptions, row
