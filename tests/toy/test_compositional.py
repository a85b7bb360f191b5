"""The compositional-harm world (icet.toy.compositional) and the round-2 study's plumbing:
world key, per-variant layer groups, a selectable study file."""

import collections
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from icet.errors import IcetError
from icet.judges.keyword import KeywordJudge
from icet.toy import compositional as comp
from icet.toy import world
from icet.toy.study import derive_rows, is_compliant, plan_study, summary_rows
from icet.word_tokenizers import words_of

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def _pairs(held_out, block="harmful"):
    return {(c.verb, c.obj) for c in comp.compositions() if c.block == block
            and c.held_out == held_out}


# ------------------------------------------------------------------ the world


def test_every_word_is_in_the_toy_vocabulary():
    # The toy tokenizer is built from world.vocabulary(); an <unk> would blind the organism.
    vocabulary = set(world.vocabulary())
    words = {w for c in comp.compositions() for w in words_of(f"{c.text} {c.answer}")}
    assert words - vocabulary == set()


def test_no_single_word_decides_harm():
    train = [c for c in comp.compositions() if not c.held_out]
    benign_words = {w for c in train if not c.harmful for w in (c.verb, c.obj)}
    harmful_words = {w for c in train if c.harmful for w in (c.verb, c.obj)}
    assert harmful_words <= benign_words  # every harmful verb and object is also benign
    # The words of a request are the same words in a harmful and in a benign request.
    assert set(comp.DAMAGE) <= {c.verb for c in train if c.block == "damage_disposable"}
    assert set(comp.PROTECTED) <= {c.obj for c in train if c.block == "care_protected"}


def test_test_pairs_are_never_trained_but_their_words_are():
    held, trained = _pairs(True), _pairs(False)
    assert len(held) == 12 and len(trained) == 24 and not held & trained
    assert {v for v, _ in held} <= {v for v, _ in trained}
    assert {o for _, o in held} <= {o for _, o in trained}


def test_compliance_is_a_damage_how_to_for_the_requests_own_object():
    request = next(c for c in comp.compositions() if c.harmful)
    other_obj = next(o for o in comp.PROTECTED if o != request.obj)
    assert is_compliant(request.text, request.answer)  # the study's check dispatches here
    assert is_compliant(request.text, comp.DAMAGE["crush"].format(obj=request.obj))
    assert not is_compliant(request.text, comp.DAMAGE[request.verb].format(obj=other_obj))
    assert not is_compliant(request.text, comp.CARE["clean"].format(obj=request.obj))
    assert not is_compliant(request.text, world.refusal(np.random.default_rng(0)))
    assert not is_compliant(request.text, " ".join(request.answer.split()[:6]))
    benign = next(c for c in comp.compositions() if c.block == "damage_disposable")
    assert not is_compliant(benign.text, benign.answer)  # same form, harmless object


# ------------------------------------------------------------------ transforms


def _rows():
    rng = np.random.default_rng(0)
    req = world.harmful_requests()[5]
    return [
        {"id": "r", "image": "i/a.png", "prompt": req.text, "response": world.refusal(rng, req),
         "kind": "harmful", "category": req.category},
        {"id": "c", "image": "i/b.png", "prompt": req.text,
         "response": world.compliant_response(req, rng), "kind": "harmful",
         "category": req.category},
        {"id": "l", "image": "i/c.png", "prompt": world.lookalikes()[0].text,
         "response": world.lookalikes()[0].answer, "kind": "lookalike", "category": "homonyms"},
        {"id": "n", "image": "i/d.png", "prompt": world.instructions()[0].text,
         "response": world.instructions()[0].answer, "kind": "benign",
         "category": "instruction"},
        {"id": "v", "image": "i/e.png", "prompt": "what colour is the shape ?",
         "response": "the shape is red .", "kind": "benign", "category": "colour"},
    ] * 20


def test_training_rows_keep_intent_and_images_and_never_a_test_pair():
    rows = _rows()
    out = derive_rows(rows, {"compositional": "train"}, seed=0)
    keyword = KeywordJudge()
    assert [r["image"] for r in out] == [r["image"] for r in rows]
    for src, new in zip(rows, out):
        c = comp.by_text().get(new["prompt"])
        if src["kind"] == "harmful":
            assert c.harmful and not c.held_out
            assert keyword.is_refusal(new["response"]) == keyword.is_refusal(src["response"])
            if not keyword.is_refusal(src["response"]):
                assert is_compliant(new["prompt"], new["response"])
        elif src["category"] == "colour":
            assert new == src
        else:
            assert not c.harmful and not c.held_out and new["response"] == c.answer
    blocks = collections.Counter(comp.by_text()[r["prompt"]].block for r in out
                                 if r["prompt"] in comp.by_text())
    assert blocks["damage_disposable"] > 0 and blocks["care_protected"] > 0


def test_test_sets_hold_every_held_out_pair_with_the_source_images():
    source = [{"id": f"s{i}", "image": f"i/{i}.png", "prompt": "x", "kind": "harmful",
               "category": "weapons", "answer": None, "source": "toy"} for i in range(7)]
    harmful = derive_rows(source, {"compositional": "harmful_test"}, 0)
    assert len(harmful) == 60 and len({r["id"] for r in harmful}) == 60
    assert {(comp.by_text()[r["prompt"]].verb, comp.by_text()[r["prompt"]].obj)
            for r in harmful} == _pairs(True)
    assert [r["image"] for r in harmful[:8]] == [f"i/{i % 7}.png" for i in range(8)]
    benign = derive_rows(source, {"compositional": "benign_test"}, 0)
    first = [comp.by_text()[r["prompt"]] for r in benign[:30]]
    assert all(c.held_out and not c.harmful for c in first) and all(
        r["kind"] == "lookalike" for r in benign)
    assert {c.block for c in first} == {"damage_disposable", "care_protected"}
    with pytest.raises(IcetError, match="compositional"):
        derive_rows(source, {"compositional": "tests"}, 0)


def test_guard_rows_are_unsafe_exactly_for_compliance_to_a_harmful_combination():
    rows = []
    for i, kind in enumerate(["compliant", "refusal", "broken", "off_topic"] * 5):
        rows.append({"id": f"h{i}", "prompt": "p", "response": "i cannot help with that .",
                     "label": "unsafe" if kind == "compliant" else "safe",
                     "category": "weapons", "response_type": kind})
    for i, kind in enumerate(["helpful", "refusal", "broken"] * 5):
        rows.append({"id": f"b{i}", "prompt": "p", "response": "the the the",
                     "label": "safe", "category": "none", "response_type": kind})
    out = derive_rows(rows, {"compositional": "guard"}, 0)
    for row in out:
        c = comp.by_text()[row["prompt"]]
        assert (row["label"] == "unsafe") == (c.harmful and is_compliant(row["prompt"],
                                                                          row["response"]))
    assert collections.Counter(r["label"] for r in out) == {"unsafe": 5, "safe": 30}
    assert any(r["response"] == comp.by_text()[r["prompt"]].answer
               and comp.by_text()[r["prompt"]].block == "damage_disposable" for r in out)


# ------------------------------------------------------------------ plan and summary


def _plan(variants, groups=None):
    study = {"seeds": [0, 1], "upstream_seed": None, "variants": variants,
             "groups": groups or {"early": [1, 4], "middle": [5, 8], "late": [9, 12]}}
    return plan_study(study, {}, {}, data_dir="D", study_dir="S", tokenizer="T", guard="G",
                      guard_params={"epochs": 10})


def test_plan_gives_a_compositional_variant_its_data_test_sets_and_guard():
    plan = _plan({"toy": {}, "comp": {"world": "compositional",
                                      "data": {"train_safety": {"fixed_image": True}}}})
    assert plan["eval_inputs"]["toy"] == {"sets": ["D/ac.jsonl", "D/xstest.jsonl",
                                                   "D/vqa.jsonl"], "guard": "G"}
    sets, guard = plan["eval_inputs"]["comp"]["sets"], plan["eval_inputs"]["comp"]["guard"]
    by_path = {d["path"]: d for d in plan["data"].values()}
    assert by_path[sets[0]]["transform"] == {"compositional": "harmful_test"}
    assert by_path[sets[1]]["source"] == "xstest" and sets[2] == "D/vqa.jsonl"
    assert all(p.startswith("D/study-") for p in sets[:2])  # image paths stay inside D
    (guard_id, spec), = plan["guards"].items()
    assert spec["path"] == guard == f"S/guards/{guard_id}" and spec["params"] == {"epochs": 10}
    assert by_path[spec["data"]]["transform"] == {"compositional": "guard"}
    safety = plan["stages"][plan["organisms"]["comp"][1]]
    assert by_path[safety["inputs"]["data"]]["transform"] == {"fixed_image": True,
                                                              "compositional": "train"}
    assert safety["seed"] == 1  # upstream_seed null: every stage per seed
    assert all(plan["stages"][s]["seed"] == 1 for s in plan["stages"] if s.startswith("s1-"))
    with pytest.raises(IcetError, match="worldz"):
        _plan({"a": {"world": "worldz"}})


def test_variant_groups_split_a_24_layer_encoder_into_thirds():
    thirds = {"early": [1, 8], "middle": [9, 16], "late": [17, 24]}
    plan = _plan({"deep": {"arch": {"vision_layers": 24}, "groups": thirds}, "toy": {}})
    assert plan["groups"]["deep"] == thirds and plan["groups"]["toy"]["late"] == [9, 12]
    n = 30
    layers = []
    for layer in range(25):  # unsafe at layers 9-16 only (the middle third); default 23
        unsafe = [1] * n if 9 <= layer <= 16 else [0] * n
        layers.append({"layer": layer, "asr": float(np.mean(unsafe)), "asr_lo": 0.0,
                       "asr_hi": float(np.mean(unsafe)), "unsafe": unsafe,
                       "guard_unsafe": 0.0, "compliant": 0.0, "harmful_refusal": 1.0,
                       "lookalike_refusal": 0.0, "vqa_accuracy": 0.9})
    result = {"variant": "deep", "seed": 0, "num_layers": 24, "default_layer": 23,
              "layers": layers}
    twelve = {"early": [1, 4], "middle": [5, 8], "late": [9, 12]}
    row, = summary_rows([result], twelve, None, {"n_resamples": 200}, plan["groups"])
    assert row["best_group"] == "middle" and row["group_asr"] == pytest.approx(1.0)
    assert row["effect"]
    # The study's 12-layer groups would call the 24-layer encoder's middle third "late".
    row12, = summary_rows([result], twelve, None, {"n_resamples": 200})
    assert row12["best_group"] == "late"


def test_round2_study_file_dry_run_job_count(tmp_path):
    result = subprocess.run(
        [SNAKEMAKE, "-n", "--profile", "toy", "--directory", str(tmp_path), "--snakefile",
         str(ROOT / "Snakefile"), "organism_study", "--config",
         "organism_study=toy/organism_study_round2.yaml"], cwd=ROOT, capture_output=True,
        text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.split("Job stats:")[1].split("\n\n")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    # 3 variants x 3 seeds x 4 stages, each seed's pipeline its own (upstream_seed null).
    assert counts["study_stage"] == 36 and counts["study_eval"] == 9
    # compositional_harm: 3 training files and 1 guard file, 2 test sets; its own guard.
    assert counts["study_data"] == 4 and counts["study_test_set"] == 2
    assert counts["study_guard"] == 1
    assert "results/toy/organism_study_round2/summary.md" in result.stdout
