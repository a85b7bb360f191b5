"""The data-set registry (icet.datasets) and what the workflow derives from it: one source per
set, the run's sets (a set the toy lacks is left out of a toy run), the downloads and the data
gate of a paper run, the config check, and a new source picked up with no list edited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from icet.config import check_config, load_config, load_yaml, merge
from icet.datasets import base, plan, registry, titles
from icet.datasets.base import DataSet, Download, Source
from icet.errors import IcetError
from icet.rows import check_dataset_row

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def test_every_set_has_one_source_a_role_and_a_title():
    sources = registry()
    assert set(sources) == {"advbench", "coco", "jailbreakv", "safebench", "vqa", "xstest"}
    by_set = {s.name: (src.name, s.role) for src in sources.values() for s in src.sets}
    assert by_set == {"cp": ("advbench", "safety"), "ac": ("advbench", "safety"),
                      "rt": ("jailbreakv", "train"), "mr": ("jailbreakv", "safety"),
                      "vqa": ("vqa", "utility"), "xstest": ("xstest", "utility"),
                      "safebench": ("safebench", "safety")}
    assert titles(["cp", "mr", "ac", "safebench"]) == {
        "cp": "CP", "mr": "MR", "ac": "AC", "safebench": "SafeBench"}
    # one image-suffix list for every builder
    from icet.datasets import files

    assert files.IMAGE_SUFFIXES[:3] == (".jpg", ".jpeg", ".png")


def test_the_paper_runs_downloads_paths_and_gate_are_what_the_rules_had():
    """Known answer: the lists rules/common.smk spelled out before the registry."""
    config = load_config(ROOT / "config.yaml")
    sets = plan.run_sets(config)
    assert sets.built == ["cp", "mr", "ac", "vqa", "xstest", "rt"]
    assert sorted(plan.download_records(sets.built, config["data"], "R")) == sorted(
        [f"R/raw/{n}" for n in ("jailbreakv", "xstest", "coco", "vqa_questions",
                                "vqa_annotations")] + ["R/raw/advbench/harmful_behaviors.csv"])
    assert plan.gate(sets.built, "R") == ["R/paper/jailbreakv/mr.jsonl",
                                          "R/paper/jailbreakv/rt.jsonl"]
    assert plan.gate(["cp", "vqa"], "R") == []
    assert plan.dataset_path("R", "ac") == "R/paper/advbench/ac.jsonl"
    jbv = plan.sources(["rt"])[0]
    assert plan.build_inputs(jbv, config["data"], "R") == {"jbv": "R/raw/jailbreakv"}
    coco = merge(config["data"], {"jailbreakv": {"rt_images": "coco"}})
    assert plan.build_inputs(jbv, coco, "R") == {"jbv": "R/raw/jailbreakv", "coco": "R/raw/coco"}
    # SafeBench switched on adds its two downloads, nothing else
    more = plan.download_records(sets.built + ["safebench"], config["data"], "R")
    assert set(more) - set(plan.download_records(sets.built, config["data"], "R")) == {
        "R/raw/safebench/safebench.csv", "R/raw/safebench_images"}


def test_a_set_the_toy_lacks_is_left_out_of_a_toy_run():
    from icet.toy.datasets import TEST_SETS

    config = {"testsets": ["cp", "safebench", "mr"], "utility_sets": ["vqa"], "train_set": "rt"}
    assert plan.run_sets(config, available=TEST_SETS).safety == ["cp", "mr"]
    assert plan.run_sets(config).safety == ["cp", "safebench", "mr"]


@pytest.mark.parametrize("overlay, message", [
    ({"testsets": ["cp", "vqa"]}, "key 'testsets[1]': 'vqa' is not a safety set (registered: "
                                  "ac, cp, mr, safebench"),
    ({"testsets": ["cp", "zorb"]}, "key 'testsets[1]': 'zorb' is not a safety set"),
    ({"utility_sets": ["cp"]}, "key 'utility_sets[0]': 'cp' is not a utility set"),
    ({"train_set": "mr"}, "key 'train_set': 'mr' is not a train set (registered: rt;"),
])
def test_a_set_named_under_the_wrong_key_stops_in_one_line(overlay, message):
    config = merge(load_yaml(ROOT / "config.yaml"), overlay)
    with pytest.raises(IcetError) as err:
        check_config(config, source="c.yaml")
    assert str(err.value).startswith("c.yaml: ") and message in str(err.value)


def test_a_new_source_needs_no_list_edited(monkeypatch):
    """A source registered like the built-in ones (a module of icet.datasets would do it on
    import) is a set of its role for the config check, the run plan and the row rules."""
    registry()
    monkeypatch.setattr(base, "REGISTRY", dict(base.REGISTRY))
    monkeypatch.setattr(base, "_SETS", {})
    base.register(Source(
        name="demo", title="Demo",
        downloads=(Download("demo", "file", block="demo"),),
        sets=(DataSet("demo", "safety", "DEMO", kinds=("harmful",)),),
        inputs=lambda data: {"demo": "demo", "images": "coco"},
        build=lambda inputs, out_dir, **_: {}))
    config = merge(load_yaml(ROOT / "config.yaml"),
                   {"testsets": ["cp", "demo"], "data": {}})
    config["data"]["demo"] = {"url": "https://h.org/p/demo.csv"}
    with pytest.raises(IcetError, match="unknown key 'demo' in data"):  # its schema block
        check_config(config)
    config["data"].pop("demo")
    with pytest.raises(IcetError, match=r"key 'data.demo' missing: Demo \(demo\)"):
        plan.check_sets(config)
    config["data"]["demo"] = {"url": "https://h.org/p/demo.csv"}
    plan.check_sets(config)
    assert plan.dataset_path("R", "demo") == "R/paper/demo/demo.jsonl"
    assert "R/raw/demo/demo.csv" in plan.download_records(["demo"], config["data"], "R")
    assert titles(["demo"]) == {"demo": "DEMO"}
    row = {"id": "d-1", "prompt": "p", "image": "a.png", "kind": "benign", "category": "c",
           "answer": None, "source": "s"}
    with pytest.raises(IcetError, match="kind 'benign' not one of harmful \\(a demo row\\)"):
        check_dataset_row(row, "demo.jsonl: row 1", "demo")
    assert "demo" in {s.name for s in plan.paper_sources()}


def _dry_run(profile: str, tmp_path: Path, *overlays: str) -> str:
    overlay = tmp_path / "sets.yaml"
    overlay.write_text("testsets: [cp, mr, ac, safebench]\n")
    done = subprocess.run(
        [SNAKEMAKE, "-n", "--profile", profile, "--directory", str(tmp_path / "run"),
         "--snakefile", str(ROOT / "Snakefile"), "--configfile", *overlays, str(overlay)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "ICET_SLURM_PARTITION": "gpu"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_safebench_switched_on_is_built_and_swept_by_the_paper_dag_and_absent_from_the_toy(
        tmp_path):
    paper = _dry_run("slurm", tmp_path, str(ROOT / "config.yaml"))
    assert "rule build_safebench:" in paper
    assert "output: resources/paper/safebench/safebench.jsonl" in paper
    assert "output: resources/raw/safebench_images" in paper
    assert "results/paper/sweep/llava-1.5-7b/original/safebench/chunk-00.json" in paper
    toy = _dry_run("toy", tmp_path, str(ROOT / "toy" / "toy.yaml"))
    assert "rule sweep_shard:" in toy and "/cp/" in toy
    assert "/safebench/" not in toy and "safebench.jsonl" not in toy
