"""XSTest v2 (Röttger et al., NAACL 2024): safe prompts that look unsafe, each with a seeded
safe image, to measure over-refusal (config block `data.xstest`).

The authors' own CSV (github.com/paul-rottger/xstest, `xstest_prompts.csv`:
id,prompt,type,label,focus,note), else the Hub copy natolambert/xstest-v2-copy, which serves
parquet only: `data/prompts-00000-of-00001.parquet` beside one file per model's completions
(`data/gpt4-...`, `data/llama2new-...`), which must not be read as prompts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from icet.datasets.base import DataSet, Download, Source, register
from icet.datasets.files import (columns, find_one, id_width, input_hashes, list_images, pick,
                                 read_table, require_text, row, text, write_sets)
from icet.errors import IcetError
from icet.logs import setup_logging
from icet.seeding import generator

XSTEST_PROMPTS = ("xstest_prompts.csv", "xstest_v2_prompts.csv", "prompts-*.parquet",
                  "*prompts*.parquet")
XSTEST_COLUMNS = {
    "id": ("id", "id_v2"),
    "prompt": ("prompt",),
    "type": ("type",),
    "label": ("label",),
}

# XSTest v2 (Röttger et al., NAACL 2024; the authors' xstest_prompts.csv): 450 prompts, of
# which 250 safe ones (10 types x 25) and 200 unsafe contrast_ ones.
XSTEST_V2_ROWS, XSTEST_V2_SAFE = 450, 250


def build_xstest_set(
    xstest_file: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    seed: int,
    log: str | os.PathLike | None = None,
) -> dict:
    """XSTest's safe prompts, each with a seeded safe image, kind "lookalike": they measure
    over-refusal. Writes xstest.jsonl.

    `xstest_file` is the authors' CSV (`xstest_prompts.csv`: id,prompt,type,label,focus,note;
    250 safe and 200 unsafe rows) or the prompts parquet of natolambert/xstest-v2-copy
    (`data/prompts-00000-of-00001.parquet`, the same rows). Safe: label "safe" where a label
    column exists, else a type not starting "contrast_" (the authors' unsafe contrast types);
    where both exist they must agree, so a shifted or re-coded column cannot pass unnoticed.
    """
    logger = setup_logging(log, "datasets")
    path = Path(xstest_file)
    rows, lines, header, unit = read_table(path)
    cols = columns(path, header, XSTEST_COLUMNS, required=["prompt", "type"])
    pool = sorted((Path(p) for p in images), key=str)
    if not pool:
        raise IcetError("images: none given for XSTest")
    rng = generator(seed)
    width = id_width(len(rows))
    kept = []
    for i, (r, line) in enumerate(zip(rows, lines)):
        kind = require_text(r, cols["type"], path, line, unit)
        label = text(r, cols["label"]).lower()
        by_type = not kind.lower().startswith("contrast_")
        if label and label not in ("safe", "unsafe"):
            raise IcetError(f"{path}: {unit} {line}: label {label!r} is neither 'safe' nor "
                            f"'unsafe'")
        if label and (label == "safe") != by_type:
            raise IcetError(f"{path}: {unit} {line}: label {label!r} disagrees with type {kind!r} "
                            f"(contrast_ types are the unsafe ones)")
        if (label == "safe") if label else by_type:
            kept.append((i, r, line, kind))
    if not kept:
        raise IcetError(f"{path}: no safe prompts (label 'safe' or a type not starting "
                        f"'contrast_')")
    picks = pick(rng, pool, len(kept))
    out_rows = []
    for (i, r, line, kind), image in zip(kept, picks):
        key = text(r, cols["id"]) or f"{i:0{width}d}"
        out_rows.append(row(f"xstest-{key}", require_text(r, cols["prompt"], path, line, unit),
                             "lookalike", kind, "xstest-v2", image, "safe", image.name,
                             f"images ({image})"))
    if len(rows) == XSTEST_V2_ROWS and len(out_rows) != XSTEST_V2_SAFE:
        logger.warning("%s: %d rows (all of XSTest v2) but %d safe, not %d", path, len(rows),
                       len(out_rows), XSTEST_V2_SAFE)
    build = {
        "builder": "xstest",
        "seed": seed,
        "params": {},
        "inputs": input_hashes(xstest_prompts=path),
        "format": path.suffix.lower().lstrip("."),
        "safe_rule": "label == 'safe' if a label column exists, else type not starting 'contrast_'",
        "kept": len(out_rows),
        "dropped": len(rows) - len(out_rows),
    }
    return write_sets(out_dir, {"xstest.jsonl": out_rows}, build, logger)


def build(inputs: dict[str, Path], out_dir, *, seed: int, log=None) -> dict:
    """Rule build_xstest: the prompts file found in the download, COCO's images."""
    return build_xstest_set(find_one(inputs["xstest"], *XSTEST_PROMPTS),
                            list_images(inputs["images"], required=True), out_dir, seed, log=log)


def describe(build: dict) -> list[str]:
    return [f"XSTest: {build['kept']} safe prompts kept, {build['dropped']} unsafe "
            f"(contrast_) left out ({build.get('format', 'csv')})"]


# ------------------------------------------------------------------------- mirror stand-in

# natolambert/xstest-v2-copy: every split (the prompts and one per model's completions) has
# the same eight columns, the completion splits' as its README lists them ("features: ['id',
# 'type', 'prompt', 'completion', 'annotation_1', 'annotation_2', 'agreement', 'final_label']",
# commit 87e0b32), ids as strings "v2-<n>". On the prompts split the completion columns are
# empty and annotation_1 holds the focus word (a public project's notes on the split; the
# Hub's viewer was out of reach). No `label` column: the builder's type-only rule applies
# (types starting contrast_ are the unsafe ones). The authors' own xstest_prompts.csv has
# id,prompt,type,label,focus,note instead (the builder reads both).
HUB_COPY_COLUMNS = ["id", "type", "prompt", "completion", "annotation_1", "annotation_2",
                    "agreement", "final_label"]
# data/ of the repo (tree page of main): the prompts and five models' completions.
HUB_COPY_SPLITS = ["prompts", "gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct"]
_SAFE_TYPES = ["homonyms", "figurative_language", "safe_targets", "safe_contexts", "definitions"]


def mirror(block: dict, site) -> dict:
    """natolambert/xstest-v2-copy: parquet only, data/<split>-00000-of-00001.parquet for each
    of HUB_COPY_SPLITS, all with HUB_COPY_COLUMNS."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from icet.mirror.data import PLACES, request

    sizes, folder = site.sizes, site.scratch / "xstest"
    rng = np.random.default_rng(site.seed + 13)
    prompts = []
    for i in range(sizes.xstest_safe + sizes.xstest_unsafe):
        safe = i < sizes.xstest_safe
        kind = _SAFE_TYPES[i % len(_SAFE_TYPES)]
        prompts.append({"id": f"v2-{i + 1}", "type": kind if safe else f"contrast_{kind}",
                        "prompt": (f"how do i kill a python process at the {rng.choice(PLACES)} ?"
                                   if safe else request(rng))})
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split in HUB_COPY_SPLITS:
        answered = split != "prompts"
        rows = [{**r, "completion": "sure , here is step one ." if answered else None,
                 "annotation_1": "1_full_compliance" if answered else "kill",
                 "annotation_2": "1_full_compliance" if answered else None,
                 "agreement": True if answered else None,
                 "final_label": "1_full_compliance" if answered else None} for r in prompts]
        schema = pa.schema([(c, pa.bool_() if c == "agreement" else pa.string())
                            for c in HUB_COPY_COLUMNS])
        table = pa.table({c: [r[c] for r in rows] for c in HUB_COPY_COLUMNS}, schema=schema)
        pq.write_table(table, data / f"{split}-00000-of-00001.parquet")
    (folder / "README.md").write_text(
        "---\nlicense: cc-by-4.0\n---\n# XSTest v2 copy (mirror: layout only, fictional text)\n",
        encoding="utf-8")
    site.repo(block["repo"], folder, "dataset", block.get("revision", "main"))
    return {}


SOURCE = register(Source(
    name="xstest",
    title="XSTest",
    downloads=(Download("xstest", "snapshot", block="xstest",
                        allow_patterns=("*.csv", "*.json", "*.jsonl", "*.parquet", "*.md")),),
    # The safe look-alikes over-refusal is measured on.
    sets=(DataSet("xstest", "utility", "XSTest", kinds=("lookalike",)),),
    inputs=lambda data: {"xstest": "xstest", "images": "coco"},
    build=build,
    describe=describe,
    mirror=mirror,
))
