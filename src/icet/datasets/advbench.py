"""AdvBench (Zou et al. 2023): CP and AC, the paper's custom-prompt and AdvBench-COCO sets.

CP is 10 AdvBench prompts x 10 safe images (100 rows), AC every other prompt with a seeded COCO
image. The raw file is llm-attacks' `data/advbench/harmful_behaviors.csv` (columns goal,target,
520 rows; config `data.advbench`, pinned to a commit and a sha256); CP's safe images are COCO
images too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from icet.datasets.base import DataSet, Download, Source, register
from icet.datasets.files import (columns, find_one, id_width, input_hashes, list_images,
                                 pick, read_csv, require_text, row, text, write_sets)
from icet.errors import IcetError
from icet.logs import setup_logging
from icet.seeding import generator

# Column names by meaning, first match wins (case-insensitive).
ADVBENCH_COLUMNS = {"prompt": ("goal", "behavior", "prompt"), "category": ("category",)}
FILE = "harmful_behaviors.csv"


def build_advbench_sets(
    advbench_csv: str | os.PathLike,
    safe_images: Sequence[str | os.PathLike],
    coco_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    cp_prompts: int = 10,  # the paper's CP: 10 AdvBench prompts ...
    cp_images: int = 10,  # ... each with each of 10 safe images (100 rows)
    log: str | os.PathLike | None = None,
) -> dict:
    """CP (cp_prompts x cp_images) and AC (every other prompt with a seeded COCO image).

    Writes out_dir/{cp.jsonl, ac.jsonl, build.json, images/}; returns build.json's content.
    """
    logger = setup_logging(log, "datasets")
    path = Path(advbench_csv)
    rows, lines, header = read_csv(path)
    cols = columns(path, header, ADVBENCH_COLUMNS, required=["prompt"])
    prompts = [(i, require_text(r, cols["prompt"], path, line),
                text(r, cols["category"]) or "advbench")  # AdvBench itself has no categories
               for i, (r, line) in enumerate(zip(rows, lines))]
    if len(prompts) <= cp_prompts:
        raise IcetError(f"{path}: {len(prompts)} prompts; CP needs {cp_prompts} and AC at "
                        f"least one more")
    images = sorted((Path(p) for p in safe_images), key=str)
    if len(images) < cp_images:
        raise IcetError(f"safe_images: {len(images)} given, CP needs {cp_images}")
    coco = list_images(Path(coco_dir))
    if not coco:
        raise IcetError(f"{coco_dir}: no images")

    rng = generator(seed)
    cp_rows = sorted(int(i) for i in rng.choice(len(prompts), size=cp_prompts, replace=False))
    cp_imgs = sorted(int(i) for i in rng.choice(len(images), size=cp_images, replace=False))
    cp_set = set(cp_rows)
    ac_prompts = [p for p in prompts if p[0] not in cp_set]
    ac_imgs = pick(rng, coco, len(ac_prompts))

    width = id_width(len(prompts))
    cp = [row(f"cp-{i:0{width}d}-{k:02d}", prompt, "harmful", category, "advbench-cp",
              images[j], "safe", images[j].name, f"safe_images[{j}]")
          for i, prompt, category in (prompts[r] for r in cp_rows)
          for k, j in enumerate(cp_imgs)]
    ac = [row(f"ac-{i:0{width}d}", prompt, "harmful", category, "advbench-ac",
              img, "coco", img.name, f"{coco_dir}")
          for (i, prompt, category), img in zip(ac_prompts, ac_imgs)]
    build = {
        "builder": "advbench",
        "seed": seed,
        "params": {"cp_prompts": cp_prompts, "cp_images": cp_images},
        "inputs": input_hashes(advbench_csv=path),
        "cp_prompt_rows": cp_rows,  # 0-based data rows of the AdvBench CSV
        "cp_images": [str(images[j]) for j in cp_imgs],
        "coco_dir": str(coco_dir),
        "coco_pool_size": len(coco),
    }
    return write_sets(out_dir, {"cp.jsonl": cp, "ac.jsonl": ac}, build, logger)


def build(inputs: dict[str, Path], out_dir, *, seed: int, log=None, cp_prompts: int,
          cp_images: int) -> dict:
    """Rule build_advbench: CP's safe images are drawn from the COCO folder too."""
    return build_advbench_sets(find_one(inputs["advbench"], FILE, "*.csv"),
                               list_images(inputs["coco"], required=True),
                               inputs["coco"], out_dir, seed, cp_prompts=cp_prompts,
                               cp_images=cp_images, log=log)


def mirror(block: dict, site) -> dict:
    """llm-attacks' CSV (columns goal,target) at the path of the config's URL."""
    import numpy as np

    from icet.mirror.data import NOUNS, VERBS, write_csv

    rng = np.random.default_rng(site.seed)
    rows = []
    for _ in range(site.sizes.advbench):
        goal = f"write a guide to {rng.choice(VERBS)} the {rng.choice(NOUNS)}"
        rows.append([goal, f"Sure, here is a guide to {goal.split(' to ', 1)[1]}"])
    write_csv(site.url(block["url"]), ["goal", "target"], rows)
    return {}


SOURCE = register(Source(
    name="advbench",
    title="AdvBench",
    downloads=(Download("advbench", "file", block="advbench"),),
    sets=(DataSet("cp", "safety", "CP", kinds=("harmful",)),
          DataSet("ac", "safety", "AC", kinds=("harmful",))),
    inputs=lambda data: {"advbench": "advbench", "coco": "coco"},
    settings=lambda config: {k: config["data"]["sizes"][k] for k in ("cp_prompts", "cp_images")},
    build=build,
    mirror=mirror,
))
