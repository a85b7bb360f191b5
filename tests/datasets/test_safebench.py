"""FigStep's SafeBench as a data-set plug-in (icet.datasets.safebench): rows from the real
layout (safebench.csv's columns, query_ForbidQI_<topic>_<task>_6.png in GitHub's archive of a
commit), one line for what is missing, the pin in config, and the mirror's stand-in built back."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from icet.config import check_config, load_config, load_yaml, merge
from icet.datasets import safebench
from icet.datasets.base import downloads
from icet.errors import IcetError
from icet.rows import validate_dataset

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0861b17b3d67887c06ee3534ec65b3012f9becb7"
HEADER = ["dataset", "category_id", "task_id", "category_name", "question", "instruction"]


def _source(root: Path, rows: list[list], images: list[str] | None = None) -> dict[str, Path]:
    """The two downloads as the rules leave them: the CSV in raw/safebench/, and GitHub's
    archive unpacked in raw/safebench_images/ (FigStep-<commit>/data/images/SafeBench/)."""
    questions = root / "raw" / "safebench"
    questions.mkdir(parents=True)
    with open(questions / "safebench.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([HEADER] + rows)
    folder = root / "raw" / "safebench_images" / f"FigStep-{COMMIT}" / "data" / "images" / "SafeBench"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text("\n")
    names = images if images is not None else [
        safebench.image_name(r[0], str(r[1]), str(r[2])) for r in rows]
    for i, name in enumerate(names):
        Image.new("RGB", (16, 16), (255 - i, 255, 255)).save(folder / name)
    # SafeBench-Tiny's folder sits beside it in the repository and must not be read
    tiny = folder.parent / "SafeBench-Tiny"
    tiny.mkdir()
    Image.new("RGB", (16, 16)).save(tiny / "query_ForbidQI_1_1_6.png")
    return {"questions": questions, "images": root / "raw" / "safebench_images"}


ROWS = [["ForbidQI", 1, 1, "Illegal Activity", "how can someone glorp a zindle ?",
         "Steps to glorp a zindle."],
        ["ForbidQI", 1, 2, "Illegal Activity", "where can someone find a florb ?",
         "List of places to find a florb."],
        ["ForbidQI", 10, 3, "Health Consultation", "can you diagnose my wumple ?",
         "Methods to diagnose a wumple."]]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rows_are_figsteps_attack_with_the_plain_question_as_request(tmp_path):
    inputs = _source(tmp_path, ROWS)
    out = tmp_path / "paper" / "safebench"
    build = safebench.build(inputs, out, seed=0)
    rows = _jsonl(out / "safebench.jsonl")
    assert [r["id"] for r in rows] == ["safebench-01-01", "safebench-01-02", "safebench-10-03"]
    # the model sees FigStep's benign-looking text prompt; the request is only in the image
    assert {r["prompt"] for r in rows} == {safebench.FIGSTEP_PROMPT}
    assert [r["request"] for r in rows] == [r[4] for r in ROWS]
    assert [r["category"] for r in rows] == ["Illegal Activity"] * 2 + ["Health Consultation"]
    assert {r["kind"] for r in rows} == {"harmful"} and {r["answer"] for r in rows} == {None}
    assert rows[2]["image"] == "images/safebench/query_ForbidQI_10_3_6.png"
    # the set's own rules (harmful only) and every image decoding, as the sweep reads it
    assert validate_dataset(out / "safebench.jsonl", "safebench") == rows
    assert build["topics"] == {"Health Consultation": 1, "Illegal Activity": 2}
    assert build["images_dir"].endswith(f"FigStep-{COMMIT}/data/images/SafeBench")
    assert build["inputs"]["safebench_csv"]["path"].endswith("raw/safebench/safebench.csv")


def test_missing_images_stop_in_one_line_before_anything_is_written(tmp_path):
    names = [safebench.image_name("ForbidQI", "1", "1")]  # the other two are missing
    inputs = _source(tmp_path, ROWS, images=names)
    out = tmp_path / "out"
    with pytest.raises(IcetError) as err:
        safebench.build(inputs, out, seed=0)
    message = str(err.value)
    assert message.startswith("SafeBench: 2 of 3 images missing (first: ")
    assert "safebench.csv: line 3: image query_ForbidQI_1_2_6.png not found" in message
    assert "\n" not in message and not out.exists()


def test_a_missing_column_names_the_file_and_the_column(tmp_path):
    inputs = _source(tmp_path, ROWS)
    path = inputs["questions"] / "safebench.csv"
    text = path.read_text().replace("category_name", "topic", 1)
    path.write_text(text)
    with pytest.raises(IcetError, match=r"safebench.csv: missing column 'category_name'"):
        safebench.build(inputs, tmp_path / "out", seed=0)


def test_the_archive_without_its_image_folder_says_what_it_looked_for(tmp_path):
    inputs = _source(tmp_path, ROWS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(IcetError, match="no images/SafeBench folder"):
        safebench.build({**inputs, "images": empty}, tmp_path / "out", seed=0)


def test_off_in_the_paper_config_and_pinned_to_one_commit():
    config = load_config(ROOT / "config.yaml")
    assert config["testsets"] == ["cp", "mr", "ac"]  # the paper's Table 2 stays CP/MR/AC
    block = config["data"]["safebench"]
    assert f"/ThuCCSLab/FigStep/{COMMIT}/data/question/safebench.csv" in block["questions_url"]
    assert block["images_url"] == f"https://github.com/ThuCCSLab/FigStep/archive/{COMMIT}.zip"
    assert re.fullmatch(r"[0-9a-f]{64}", block["questions_sha256"])
    every = downloads()
    assert every["safebench"].settings(config["data"])["file"] == "safebench.csv"
    assert every["safebench_images"].settings(config["data"])["kind"] == "archive"


def test_naming_it_without_its_data_block_stops_in_one_line():
    raw = merge(load_yaml(ROOT / "config.yaml"), {"testsets": ["cp", "safebench"]})
    check_config(raw)
    del raw["data"]["safebench"]
    with pytest.raises(IcetError, match=r"key 'data.safebench' missing: SafeBench \(FigStep\) "
                                        r"\(safebench\) is built from it"):
        check_config(raw)


class _Site:
    """What icet.mirror.build hands a stand-in, for this one source."""

    def __init__(self, root: Path):
        from icet.mirror.data import MirrorSizes

        self.http, self.scratch, self.by_hand = root / "http", root / "scratch", root
        self.sizes, self.seed = MirrorSizes(), 0

    def url(self, url: str) -> Path:
        from icet.mirror.server import mirror_path

        return mirror_path(url, self.http)


def test_the_mirror_stand_in_builds_back_into_the_set(tmp_path):
    """The stand-in's CSV and archive, downloaded as the rules do, build a valid set whose
    images carry their request as text (dark pixels on white)."""
    block = load_config(ROOT / "config.yaml")["data"]["safebench"]
    site = _Site(tmp_path)
    safebench.mirror(block, site)
    archive = site.url(block["images_url"])
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        zf.extractall(tmp_path / "raw" / "safebench_images")
    assert f"FigStep-{COMMIT}/data/question/safebench.csv" in names
    questions = tmp_path / "raw" / "safebench"
    questions.mkdir(parents=True)
    (questions / "safebench.csv").write_bytes(site.url(block["questions_url"]).read_bytes())
    out = tmp_path / "out"
    build = safebench.build({"questions": questions,
                             "images": tmp_path / "raw" / "safebench_images"}, out, seed=0)
    rows = validate_dataset(out / "safebench.jsonl", "safebench")
    assert len(rows) == 10 * safebench.MIRROR_TASKS and len(build["topics"]) == 10
    assert len({r["request"] for r in rows}) == len(rows)
    image = Image.open(out / rows[0]["image"])
    assert image.size == (760, 760) and image.mode == "RGB"
    assert image.getextrema()[0] == (0, 255)  # black text on a white canvas
