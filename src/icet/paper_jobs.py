"""Entry points of the paper's data rules: find the files inside a download folder and
hand them to the builders in icet.paper_data.

Downloads keep each source's own layout (a Hub snapshot, an unpacked zip); this module is
the one place that knows where in that layout each builder's input lives.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from icet.errors import IcetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# The file names each source really serves, most specific first, matched case-insensitively.
# VQA-v2 (https://visualqa.org/download.html; the same names in public loaders, e.g. the
# VQA-v2 dataset classes that open `v2_OpenEnded_mscoco_val2014_questions.json` and
# `v2_mscoco_val2014_annotations.json`): the zips hold exactly these two files.
VQA_QUESTIONS = ("v2_OpenEnded_mscoco_val2014_questions.json", "*questions*.json")
VQA_ANNOTATIONS = ("v2_mscoco_val2014_annotations.json", "*annotations*.json")
# XSTest: the authors' own CSV (github.com/paul-rottger/xstest, `xstest_prompts.csv`:
# id,prompt,type,label,focus,note), else the Hub copy natolambert/xstest-v2-copy, which
# serves parquet only: `data/prompts-00000-of-00001.parquet` beside one file per model's
# completions (`data/gpt4-...`, `data/llama2new-...`), which must not be read as prompts.
XSTEST_PROMPTS = ("xstest_prompts.csv", "xstest_v2_prompts.csv", "prompts-*.parquet",
                  "*prompts*.parquet")


def find_one(root: str | os.PathLike, *patterns: str) -> Path:
    """The file under `root` matching the first pattern that matches any (case-insensitive;
    shallowest, then sorted, among several). A glob like `*Questions*` on a case-sensitive
    file system missed VQA's lower-case `..._questions.json`."""
    files = sorted((p for p in Path(root).rglob("*") if p.is_file()),
                   key=lambda p: (len(p.parts), str(p)))
    for pattern in patterns:
        hits = [p for p in files if fnmatch.fnmatchcase(p.name.lower(), pattern.lower())]
        if hits:
            return hits[0]
    raise IcetError(f"{root}: no file matching {' or '.join(repr(p) for p in patterns)}")


def list_images(root: str | os.PathLike) -> list[Path]:
    images = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise IcetError(f"{root}: no images found")
    return images


def build_advbench(advbench_csv: str, coco_dir: str, out_dir: str, *, seed: int,
                   cp_prompts: int, cp_images: int, log: str | None = None) -> dict:
    """CP's safe images are COCO images too (seeded draw inside the builder)."""
    from icet.paper_data import build_advbench_sets

    images = list_images(coco_dir)
    return build_advbench_sets(advbench_csv, images, coco_dir, out_dir, seed,
                               cp_prompts=cp_prompts, cp_images=cp_images, log=log)


def build_jailbreakv(jbv_dir: str, out_dir: str, *, seed: int, rt_size: int | None,
                     images_dir: str | None = None, rt_images: str = "jailbreakv",
                     coco_dir: str | None = None, mr_missing_images: str = "error",
                     log: str | None = None) -> dict:
    from icet.paper_data import build_jailbreakv_sets

    return build_jailbreakv_sets(jbv_dir, out_dir, seed, rt_size=rt_size, images_dir=images_dir,
                                 rt_images=rt_images, coco_dir=coco_dir,
                                 mr_missing_images=mr_missing_images, log=log)


def build_vqa(questions_dir: str, annotations_dir: str, coco_dir: str, out_dir: str, *,
              seed: int, size: int, log: str | None = None) -> dict:
    from icet.paper_data import build_vqa_set

    return build_vqa_set(find_one(questions_dir, *VQA_QUESTIONS),
                         find_one(annotations_dir, *VQA_ANNOTATIONS),
                         coco_dir, out_dir, size, seed, log=log)


def build_xstest(xstest_dir: str, coco_dir: str, out_dir: str, *, seed: int,
                 log: str | None = None) -> dict:
    from icet.paper_data import build_xstest_set

    return build_xstest_set(find_one(xstest_dir, *XSTEST_PROMPTS), list_images(coco_dir),
                            out_dir, seed, log=log)
