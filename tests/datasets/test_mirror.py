"""The rehearsal mirror (icet.mirror): its layouts match its README, the real download code
reads it, and the paper DAG runs on it end to end (the last one marked `dag`: minutes)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("pyarrow", reason="the mirror writes XSTest's parquet with pyarrow")

from icet.config import load_yaml, merge  # noqa: E402
from icet.download import download_snapshot, download_url  # noqa: E402
from icet.errors import IcetError  # noqa: E402
from icet.judges.base import named as named_judges  # noqa: E402
from icet.mirror import hub  # noqa: E402
from icet.mirror.build import build_mirror  # noqa: E402
from icet.mirror.data import MirrorSizes  # noqa: E402
from icet.mirror.layout import README, check_mirror, read_layout  # noqa: E402
from icet.mirror.rehearse import url_overlay  # noqa: E402
from icet.mirror.server import local_url, serve, stable_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SMALL = MirrorSizes(advbench=4, redteam=6, full=10, mini=5, vqa_questions=6, coco2014=4,
                    coco2017=2, xstest_safe=3, xstest_unsafe=2)
DEBERTA = "OpenAssistant/reward-model-deberta-v3-large-v2"


def paper_config() -> dict:
    return merge(load_yaml(ROOT / "config.yaml"), load_yaml(ROOT / "rehearsal" / "rehearsal.yaml"))


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirror") / "mirror"
    record = build_mirror(out, paper_config(), SMALL)
    return out, record


def test_mirror_holds_every_repo_and_url_the_config_names(mirror):
    out, record = mirror
    config = paper_config()
    repos = {r["repo"] for r in record["repos"]}
    snapshots = [cls.name for cls in named_judges(config["judges"]) if cls.download == "snapshot"]
    assert "harmbench" in snapshots  # the paper config runs HarmBench's classifier too
    named = {m["repo"] for m in config["models"]} | {
        config["judges"][j]["repo"] for j in snapshots} | {
        config["judges"]["toxicity"]["config_repo"], config["data"]["jailbreakv"]["repo"],
        config["data"]["xstest"]["repo"]}
    assert repos == named
    rewritten = set(json.dumps(url_overlay(config, "X", record)).split('"'))
    # AdvBench, COCO, VQA-v2's two zips, Detoxify's checkpoint, SafeBench's CSV and archive
    assert len(record["urls"]) == 7 and all(u in record["sha256"] for u in record["urls"])
    for url in record["urls"]:
        served = record["url_map"].get(url) or local_url(url, "X")[2:]
        assert f"X/{served}" in rewritten and (out / "http" / served).is_file(), url
    gated = {r["repo"] for r in record["repos"] if r["gated"]}
    assert gated == {"meta-llama/Llama-3.2-11B-Vision-Instruct", "meta-llama/Llama-Guard-3-8B"}


def test_mirror_layout_matches_its_readme(mirror):
    out, _ = mirror
    assert len(read_layout(README)) > 20
    assert check_mirror(out) == []


def test_layout_check_fails_when_a_mirror_file_drifts(mirror, tmp_path):
    out, _ = mirror
    copy = tmp_path / "mirror"
    shutil.copytree(out, copy, symlinks=True)
    # RedTeam_2K.csv gains an image column (as today's builder once assumed it had).
    snapshot = hub.snapshot_path(copy / "hf" / "hub", "JailbreakV-28K/JailBreakV-28k", "dataset")
    redteam = snapshot / "JailBreakV_28K" / "RedTeam_2K.csv"
    rows = list(csv.reader(redteam.open()))
    redteam.unlink()  # the link only: the shared blob stays as it was
    with redteam.open("w", newline="") as f:
        csv.writer(f).writerows([rows[0] + ["image_path"]] + [r + ["x.png"] for r in rows[1:]])
    # The DeBERTa RM's main gains safetensors, and the VQA zip's member gets a capital Q.
    (hub.snapshot_path(copy / "hf" / "hub", DEBERTA) / "model.safetensors").write_bytes(b"x")
    import zipfile

    vqa = copy / "http/s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/v2_Questions_Val_mscoco.zip"
    with zipfile.ZipFile(vqa) as zf:
        content = zf.read("v2_OpenEnded_mscoco_val2014_questions.json")
    vqa.unlink()
    with zipfile.ZipFile(vqa, "w") as zf:
        zf.writestr("v2_OpenEnded_mscoco_val2014_Questions.json", content)
    problems = check_mirror(copy)
    assert any("RedTeam_2K.csv" in p and "image_path" in p for p in problems)
    assert any(DEBERTA in p and "model.safetensors (absent)" in p for p in problems)
    assert any("v2_Questions_Val_mscoco.zip (zip)" in p for p in problems)
    assert len(problems) >= 3


def test_readme_row_that_disagrees_with_the_mirror_fails(mirror, tmp_path):
    out, _ = mirror
    text = README.read_text().replace("| csv | id,question,policy,from",
                                      "| csv | id,question,policy,from,image_path")
    readme = tmp_path / "README.md"
    readme.write_text(text)
    assert [p for p in check_mirror(out, readme) if "RedTeam_2K.csv" in p]


def test_download_snapshot_reads_the_mirror_offline_with_pr_ref(mirror, tmp_path, monkeypatch):
    out, record = mirror
    monkeypatch.setenv("HF_HOME", str(out / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(IcetError, match=r"@main: no \*\.safetensors weights"):  # .bin-only main
        download_snapshot(DEBERTA, "main", tmp_path / "main")
    pr = download_snapshot(DEBERTA, "refs/pr/3", tmp_path / "pr3")
    assert "model.safetensors" in pr["files"]
    # refs/pr/3 adds model.safetensors to main's files, pickles included: only it is fetched
    snapshot = hub.snapshot_path(out / "hf" / "hub", DEBERTA, revision="refs/pr/3")
    assert (snapshot / "pytorch_model.bin").is_file() and (snapshot / "training_args.bin").is_file()
    assert not [f for f in pr["files"] if f.endswith((".bin", ".pt", ".pth"))]
    assert not list((tmp_path / "pr3").rglob("*.bin"))
    commits = {(r["repo"], r["revision"]): r["commit"] for r in record["repos"]}
    assert pr["resolved_sha"] == commits[(DEBERTA, "refs/pr/3")] != commits[(DEBERTA, "main")]
    with pytest.raises(IcetError, match="offline"):
        download_snapshot("nobody/absent", "main", tmp_path / "absent")


def test_a_revision_pinned_to_a_commit_sha_downloads_that_snapshot_offline(mirror, tmp_path,
                                                                            monkeypatch):
    """huggingface_hub reads snapshots/<sha> for a sha revision (no refs/ lookup): the mirror
    keeps the pinned HarmBench classifier there, tokenizer.model and no tokenizer.json."""
    out, record = mirror
    monkeypatch.setenv("HF_HOME", str(out / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = paper_config()["judges"]["harmbench"]
    assert len(spec["revision"]) == 40  # config.yaml pins a commit
    got = download_snapshot(spec["repo"], spec["revision"], tmp_path / "harmbench")
    assert got["resolved_sha"] == spec["revision"]
    assert "tokenizer.model" in got["files"] and "tokenizer.json" not in got["files"]


def test_mirror_vlms_load_from_the_repo_layout_with_their_real_chat_templates(mirror):
    """The VLM repos hold preprocessor_config.json and chat_template.json, not transformers 5's
    layout, and their processors render the real templates: llava-hf's (the system text as
    is, then USER:/ASSISTANT:) and Llama 3.2 Vision's (Meta's documented prompt format, no
    system turn beside an image). Each template serialises to its repo file's size."""
    from transformers import AutoProcessor

    from icet.mirror.models import LLAMA_3_2_VISION_CHAT_TEMPLATE, LLAVA_HF_CHAT_TEMPLATE

    out, _ = mirror
    assert len(json.dumps({"chat_template": LLAVA_HF_CHAT_TEMPLATE}, indent=2)) == 701
    assert len(json.dumps({"chat_template": LLAMA_3_2_VISION_CHAT_TEMPLATE}, indent=2)) == 5150
    user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    system = [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]}]
    for repo in ("llava-hf/llava-1.5-7b-hf", "llava-hf/llava-v1.6-vicuna-7b-hf"):
        processor = AutoProcessor.from_pretrained(hub.snapshot_path(out / "hf" / "hub", repo))
        assert processor.patch_size == 8  # from processor_config.json beside the image processor
        text = processor.apply_chat_template(system + user, add_generation_prompt=True)
        assert text == "Be kind. USER: <image>\nHi? ASSISTANT:", repo
    snapshot = hub.snapshot_path(out / "hf" / "hub", "meta-llama/Llama-3.2-11B-Vision-Instruct")
    processor = AutoProcessor.from_pretrained(snapshot)
    assert processor.apply_chat_template(user, add_generation_prompt=True) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>Hi?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = processor.tokenizer("<|begin_of_text|><|image|>Hi?", add_special_tokens=False)["input_ids"]
    assert processor.tokenizer.convert_ids_to_tokens(ids)[:2] == ["<|begin_of_text|>", "<|image|>"]
    assert processor.image_token == "<|image|>"


def test_local_server_serves_the_url_files_then_stops(mirror, tmp_path):
    out, _ = mirror
    url = paper_config()["data"]["advbench"]["url"]
    with serve(out / "http") as base:
        assert base.startswith("http://127.0.0.1:")
        got = download_url(local_url(url, base), tmp_path / "harmful_behaviors.csv")
    parts = urllib.parse.urlsplit(url)
    served = out / "http" / parts.netloc / parts.path.lstrip("/")
    assert (tmp_path / "harmful_behaviors.csv").read_bytes() == served.read_bytes()
    assert got["bytes"] == served.stat().st_size
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(local_url(url, base), timeout=5)


def test_server_port_is_stable_per_folder_and_a_busy_port_is_one_line(tmp_path):
    port = stable_port(str(tmp_path))
    assert port == stable_port(str(tmp_path)) and 20000 <= port < 40000
    with serve(tmp_path, 0) as base:
        busy = int(base.rsplit(":", 1)[1])
        with pytest.raises(IcetError, match=f"127.0.0.1:{busy}"):
            with serve(tmp_path, busy):
                pass


def test_served_checkpoint_name_carries_its_own_hash_and_pins_are_the_mirrors(mirror):
    """Release files are named by their sha256 prefix (toxic_original-c1212f89.ckpt): the mirror
    serves its checkpoint under its own prefix, and a config sha256 becomes the mirror's."""
    out, record = mirror
    url = paper_config()["judges"]["toxicity"]["checkpoint_url"]
    served = out / "http" / record["url_map"][url]
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    assert served.name == f"toxic_original-{digest[:8]}.ckpt" and record["sha256"][url] == digest
    config = {"data": {"advbench": {"url": paper_config()["data"]["advbench"]["url"],
                                    "sha256": "0" * 64}},
              "judges": {"toxicity": {"checkpoint_url": url}}}
    vqa = paper_config()["data"]["vqa"]
    config["data"]["vqa"] = {"questions_url": vqa["questions_url"], "questions_sha256": None}
    overlay = url_overlay(config, "http://127.0.0.1:9", record)
    assert overlay["data"]["advbench"]["sha256"] == record["sha256"][config["data"]["advbench"]["url"]]
    assert "questions_sha256" not in overlay["data"]["vqa"]  # unpinned stays unpinned
    assert overlay["judges"]["toxicity"] == {
        "checkpoint_url": f"http://127.0.0.1:9/{record['url_map'][url]}"}  # no sha key added


def test_authors_image_set_holds_every_listed_image_and_is_given_where_the_config_asks(mirror):
    out, _ = mirror
    from icet.mirror.rehearse import by_hand_overlay

    snapshot = hub.snapshot_path(out / "hf" / "hub", "JailbreakV-28K/JailBreakV-28k", "dataset")
    listed = {r["image_path"] for r in csv.DictReader(
        (snapshot / "JailBreakV_28K" / "JailBreakV_28K.csv").open())}
    authors = out / "jailbreakv-authors-images"
    assert all((authors / "JailBreakV_28k" / p).is_file() for p in listed)  # the zip's spelling
    assert not all((snapshot / "JailBreakV_28K" / p).is_file() for p in listed)
    config = {"data": {"jailbreakv": {"repo": "x", "images_dir": None}}}
    assert by_hand_overlay(config, out) == {"data": {"jailbreakv": {"images_dir": str(authors)}}}
    assert by_hand_overlay({"data": {"jailbreakv": {"images_dir": "/mine"}}}, out) == {}
    assert by_hand_overlay({"data": {"jailbreakv": {}}}, out) == {}


def test_url_overlay_rewrites_every_url_and_nothing_else():
    config = {"data": {"a": {"url": "https://h.org/p/x.csv", "sha256": None, "repo": "o/n"}},
              "judges": {"t": {"checkpoint_url": "http://g.com/r/x.ckpt", "batch_size": 2}},
              "run": "paper"}
    assert url_overlay(config, "http://127.0.0.1:9") == {
        "data": {"a": {"url": "http://127.0.0.1:9/h.org/p/x.csv"}},
        "judges": {"t": {"checkpoint_url": "http://127.0.0.1:9/g.com/r/x.ckpt"}}}


def test_rehearsal_overlay_changes_only_sizes_layers_and_lengths():
    """The paper config minus the overlay: same repos, revisions, URLs, judges and sets, and
    the optional SafeBench switched on (a fourth safety set, swept end to end)."""
    paper, rehearsal = load_yaml(ROOT / "config.yaml"), paper_config()
    for key in ("data_source", "utility_sets", "train_set", "seed"):
        assert rehearsal[key] == paper[key], key
    assert "safebench" not in paper["testsets"]
    assert rehearsal["testsets"] == paper["testsets"] + ["safebench"]
    for a, b in zip(paper["models"], rehearsal["models"], strict=True):
        for key in ("name", "source", "repo", "revision", "architecture", "lppo"):
            assert a[key] == b[key], (a["name"], key)
    for judge, spec in paper["judges"].items():
        for key in ("source", "repo", "revision", "checkpoint_url", "config_repo", "mode"):
            assert rehearsal["judges"][judge].get(key) == spec.get(key), (judge, key)
    for name in ("advbench", "jailbreakv", "coco", "vqa", "xstest", "safebench"):
        assert rehearsal["data"][name] == paper["data"][name], name


# ---------------------------------------------------------------- the rehearsal itself

@pytest.mark.dag
@pytest.mark.xdist_group("dag")
def test_reduced_rehearsal_runs_the_paper_dag_and_verifies(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "icet.mirror", "rehearse", "--workdir", str(tmp_path),
         "--configfile", str(ROOT / "rehearsal" / "rehearsal.yaml"),
         str(ROOT / "tests" / "data" / "rehearsal-ci.yaml")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    run = tmp_path / "results" / "rehearsal-ci"
    for name in ("tables/table2.csv", "tables/utility.csv", "tables/layers.csv", "summary.md",
                 "reproduction.md", "manifest.json"):
        assert (run / name).stat().st_size > 0, name
    # The utility column is the DeBERTa utility RM's, not the TR reward model's (the caption
    # named the GPT-2 TR model before: the toy has one reward model for both).
    # FigStep's SafeBench, a plug-in data set the rehearsal switches on, is built, swept and
    # tabled like the paper's three.
    assert ",safebench," in (run / "tables" / "layers.csv").read_text()
    assert ",SafeBench," in (run / "tables" / "table2.csv").read_text()
    utility = (run / "tables" / "utility.md").read_text().split("\n")[0]
    assert "utility reward: OpenAssistant/reward-model-deberta-v3-large-v2" in utility
