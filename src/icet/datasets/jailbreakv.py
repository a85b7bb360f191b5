"""JailbreakV-28K (Luo et al. 2024): RT, the RedTeam-2K queries L-PPO trains on, and MR, the
280-row mini split of jailbreak prompts with their images (config block `data.jailbreakv`).

The Hub repo JailbreakV-28K/JailBreakV-28k serves the CSVs under `JailBreakV_28K/` and only
part of the images; the full image set comes from the authors by request form
(docs/paper-run.md, "What a cluster user must fetch by hand"). The build checks every image both sets need and stops
with one line naming what is missing and how to get it; every sweep waits for it (`gate`).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from icet.datasets.base import DataSet, Download, Source, register
from icet.datasets.files import (columns, find_file, id_width, input_hashes, list_images,
                                 read_csv, require_text, row, text, write_sets)
from icet.errors import IcetError
from icet.inputs import relative_path
from icet.logs import setup_logging
from icet.seeding import generator

MINI_COLUMNS = {
    "id": ("id",),
    "prompt": ("jailbreak_query", "jailbreak_prompt"),
    # The plain RedTeam-2K query the jailbreak wraps (dataset card, "Dataset Details":
    # "redteam_query: Harmful query from RedTeam_2K"): the rows' `request`, HarmBench's behavior.
    "request": ("redteam_query",),
    "image": ("image_path", "image", "img_path"),
    "category": ("policy", "category"),
    "format": ("format",),
}
REDTEAM_COLUMNS = {
    "id": ("id",),
    "prompt": ("question", "redteam_query", "query"),
    "image": ("image_path", "image", "img_path"),
    "category": ("policy", "category"),
}
JBV_PAIR_COLUMNS = {
    "query": ("redteam_query", "question"),
    "image": ("image_path", "image", "img_path"),
}


# JailbreakV-28K's LLM-transfer attacks pair each query with a query-unrelated image (natural
# photo, blank, noise); its other images (SD_related, figstep, typo) depict the query itself.
JBV_BENIGN_IMAGE_PREFIXES = ("nature_", "blank_", "noise_")


def _resolve_dataset_image(value: str, folders: Sequence[Path], where: str) -> Path | None:
    rel = relative_path(value, where)  # no absolute path, no '..': stays in the data set
    for folder in folders:
        if (folder / rel).is_file():
            return folder / rel
    return None


def _benign_image_of_query(jbv_root: Path, prefixes: Sequence[str]) -> dict[str, str]:
    """redteam query -> the first query-unrelated image JailbreakV-28K pairs it with."""
    pairs: dict[str, str] = {}
    for name in ("JailBreakV_28K.csv", "mini_JailBreakV_28K.csv"):
        path = find_file(jbv_root, name, required=False)
        if path is None:
            continue
        rows, _, header = read_csv(path)
        cols = columns(path, header, JBV_PAIR_COLUMNS, required=[])
        if cols["query"] is None or cols["image"] is None:
            continue
        for r in rows:
            image = text(r, cols["image"])
            if image and Path(image.replace("\\", "/")).name.lower().startswith(tuple(prefixes)):
                pairs.setdefault(text(r, cols["query"]), image)
    return pairs


# Where the images come from. The Hub repo JailbreakV-28K/JailBreakV-28k holds the CSVs
# (JailBreakV_28K/{JailBreakV_28K,mini_JailBreakV_28K,RedTeam_2K}.csv) and only part of the
# images; the full set is JailBreakV_28K.zip, handed out by the authors through a request
# form (the dataset card; Microsoft PyRIT's JailBreakV-28K loader says the same). The zip
# unpacks to one folder that the CSVs' image_path values (llm_transfer_attack/nature_0.jpeg,
# figstep/...) are relative to, and its spelling is not settled in any source we could read:
# PyRIT's loader first looked for JailBreakV_28K/ (Azure/PyRIT f117a58), its current version
# looks for JailBreakV_28k/ and its test builds the zip as JailBreakV_28k/<image_path>
# (microsoft/PyRIT 8ddc37a; tests/unit/datasets/test_jailbreakv_28k_dataset.py at 0b6b27e). Both
# spellings are accepted below, as images_dir itself or as a folder inside it.
JBV_ZIP_FOLDERS = ("JailBreakV_28k", "JailBreakV_28K")
JBV_IMAGES_HOWTO = (
    "the Hub repo holds only part of JailbreakV-28K's images; request the full set "
    "(JailBreakV_28K.zip) from the authors via the form on "
    "https://huggingface.co/datasets/JailbreakV-28K/JailBreakV-28k, unpack it and set "
    "data.jailbreakv.images_dir to the folder holding llm_transfer_attack/ and figstep/ "
    "(docs/paper-run.md, 'What a cluster user must fetch by hand')")
RT_IMAGE_SOURCES = ("jailbreakv", "coco")
MR_MISSING_POLICIES = ("error", "drop")


def _image_folders(root: Path, mini_dir: Path, images_dir: str | os.PathLike | None) -> list[Path]:
    """Folders an image_path is looked up in, the user's full image set first."""
    folders = []
    if images_dir is not None:
        user = Path(images_dir)
        if not user.is_dir():
            raise IcetError(f"data.jailbreakv.images_dir: {user} not found (a folder holding the "
                            f"unpacked JailBreakV_28K.zip)")
        # images_dir may name the zip's folder or its parent (either spelling, JBV_ZIP_FOLDERS)
        folders += [user] + [user / name for name in JBV_ZIP_FOLDERS if (user / name).is_dir()]
    return folders + [mini_dir, root]


def _missing_line(what: list[tuple[str, int, list[str]]], folders: Sequence[Path],
                  fallback: str) -> str:
    """One line: which images are missing where, and how to obtain them."""
    parts = [f"{name}: {len(missing)} of {total} images missing (first: {missing[0]})"
             for name, total, missing in what if missing]
    return (f"JailbreakV-28K: {'; '.join(parts)}; looked in {', '.join(str(f) for f in folders)}; "
            f"{JBV_IMAGES_HOWTO}{fallback}")


def build_jailbreakv_sets(
    jbv_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    rt_size: int | None = None,  # None: all of RedTeam-2K; else a seeded subset (CPU budgets)
    benign_image_prefixes: Sequence[str] = JBV_BENIGN_IMAGE_PREFIXES,
    images_dir: str | os.PathLike | None = None,
    rt_images: str = "jailbreakv",
    coco_dir: str | os.PathLike | None = None,
    mr_missing_images: str = "error",
    log: str | os.PathLike | None = None,
) -> dict:
    """RT (RedTeam-2K queries with a benign image) and MR (the 280-row mini split).

    Images are looked up in `images_dir` (the authors' full set, see JBV_IMAGES_HOWTO),
    then beside the CSVs. Every image both sets need is checked before anything is built:
    what is missing is reported in one line with how to obtain it.

    RT's image (RedTeam_2K.csv has columns id, question, policy, from: no image):
    - rt_images "jailbreakv": the query-unrelated image (nature_/blank_/noise_) JailbreakV-28K
      pairs with that query in its full CSV, else a seeded draw from those images present;
      a paired image that is missing stops the build.
    - rt_images "coco": the documented fallback without the authors' images: a seeded draw
      from the COCO folder `coco_dir` (the AdvBench-COCO pool), one per query.
    MR keeps the 280 rows as released; a row whose image is missing stops the build
    (mr_missing_images "error") or is dropped ("drop"), and build.json says how many of the
    280 were used either way. An MR row's prompt is the jailbreak_query the model is shown;
    its `request` is the redteam_query that jailbreak wraps (what HarmBench's classifier
    judges against). Writes rt.jsonl and mr.jsonl.
    """
    logger = setup_logging(log, "datasets")
    if rt_images not in RT_IMAGE_SOURCES:
        raise IcetError(f"data.jailbreakv.rt_images: {rt_images!r} not in {RT_IMAGE_SOURCES}")
    if mr_missing_images not in MR_MISSING_POLICIES:
        raise IcetError(f"data.jailbreakv.mr_missing_images: {mr_missing_images!r} not in "
                        f"{MR_MISSING_POLICIES}")
    root = Path(jbv_dir)
    if not root.is_dir():
        raise IcetError(f"{root}: JailbreakV-28K folder not found")
    rt_path = find_file(root, "RedTeam_2K.csv")
    mini_path = find_file(root, "mini_JailBreakV_28K.csv")
    folders = _image_folders(root, mini_path.parent, images_dir)

    # MR: the mini split as released; its image paths are relative to the CSV's folder.
    rows, lines, header = read_csv(mini_path)
    cols = columns(mini_path, header, MINI_COLUMNS,
                    required=["prompt", "request", "image", "category"])
    width = id_width(len(rows))
    mr_total = len(rows)
    mr, formats, mr_missing = [], Counter(), []
    for i, (r, line) in enumerate(zip(rows, lines)):
        where = f"{mini_path}: line {line}"
        value = require_text(r, cols["image"], mini_path, line)
        key = text(r, cols["id"]) or f"{i:0{width}d}"
        prompt = require_text(r, cols["prompt"], mini_path, line)
        request = require_text(r, cols["request"], mini_path, line)
        category = require_text(r, cols["category"], mini_path, line)
        image = _resolve_dataset_image(value, folders, where)
        if image is None:
            mr_missing.append((f"mr-{key}", f"{where}: image {value} not found"))
            continue
        formats[text(r, cols["format"]) or "unknown"] += 1
        mr.append({**row(f"mr-{key}", prompt, "harmful", category, "jailbreakv-mini", image,
                          "jbv", _image_name(image, [root, *folders]), where),
                   "request": request})

    # RT: RedTeam-2K queries.
    rows, lines, header = read_csv(rt_path)
    cols = columns(rt_path, header, REDTEAM_COLUMNS, required=["prompt", "category"])
    rng = generator(seed)
    order = list(range(len(rows)))
    if rt_size is not None and rt_size < len(rows):
        order = sorted(int(i) for i in rng.choice(len(rows), size=rt_size, replace=False))
    width = id_width(len(rows))
    if rt_images == "coco":
        if coco_dir is None:
            raise IcetError("data.jailbreakv.rt_images: coco needs the COCO image folder")
        pool, group = list_images(Path(coco_dir)), "coco"
        pairs = {}
    else:
        pairs = {} if cols["image"] else _benign_image_of_query(root, benign_image_prefixes)
        every = sorted({p for f in folders if f.is_dir() for p in list_images(f)}, key=str)
        pool = ([p for p in every if p.name.lower().startswith(tuple(benign_image_prefixes))]
                or every)
        group = "jbv"
    if not pool:
        raise IcetError(f"{coco_dir if rt_images == 'coco' else root}: no images to pair with "
                        f"RedTeam-2K queries")
    rt, image_from, rt_missing = [], Counter(), []
    for i in order:
        r, line = rows[i], lines[i]
        where = f"{rt_path}: line {line}"
        prompt = require_text(r, cols["prompt"], rt_path, line)
        listed = (text(r, cols["image"]) or pairs.get(prompt, "")) if rt_images != "coco" else ""
        if listed:
            image = _resolve_dataset_image(listed, folders, where)
            if image is None:
                rt_missing.append(f"{where}: image {listed} not found")
                continue
            image_from["dataset"] += 1
        else:
            image = pool[int(rng.integers(len(pool)))]
            image_from["coco_draw" if rt_images == "coco" else "seeded_draw"] += 1
        key = text(r, cols["id"]) or f"{i:0{width}d}"
        category = require_text(r, cols["category"], rt_path, line)
        name = image.name if group == "coco" else _image_name(image, [root, *folders])
        rt.append(row(f"rt-{key}", prompt, "harmful", category, "jailbreakv-redteam2k",
                       image, group, name, where))

    # One line for everything missing, before anything is written.
    stop = bool(rt_missing) or (bool(mr_missing) and mr_missing_images == "error") or not mr
    if mr_missing or rt_missing:
        what = [("MR", mr_total, [m[1] for m in mr_missing]),
                ("RT (paired query-unrelated images)", len(order), rt_missing)]
        fallback = ("; or use the documented fallbacks: data.jailbreakv.rt_images: coco and "
                    "data.jailbreakv.mr_missing_images: drop (MR then reports n used of "
                    f"{mr_total})") if stop else ""
        line = _missing_line(what, folders, fallback)
        if stop:
            raise IcetError(line)
        logger.warning("%s; MR uses %d of %d rows (data.jailbreakv.mr_missing_images: drop)",
                       line, len(mr), mr_total)

    build = {
        "builder": "jailbreakv",
        "seed": seed,
        "params": {"rt_size": rt_size, "benign_image_prefixes": list(benign_image_prefixes),
                   "rt_images": rt_images, "mr_missing_images": mr_missing_images},
        "inputs": input_hashes(redteam_csv=rt_path, mini_csv=mini_path),
        "images_dir": None if images_dir is None else str(images_dir),
        "rt_rows": order if rt_size is not None else "all",
        "rt_images": rt_images,
        "rt_image_from": dict(sorted(image_from.items())),
        "rt_image_pool_size": len(pool),
        # MR never shrinks silently: how many of the released rows were used, and which not.
        "mr_rows": {"used": len(mr), "of": mr_total,
                    "dropped_missing_image": [m[0] for m in mr_missing]},
        "mr_formats": dict(sorted(formats.items())),
    }
    return write_sets(out_dir, {"rt.jsonl": rt, "mr.jsonl": mr}, build, logger)


def _image_name(image: Path, folders: Sequence[Path]) -> str:
    """The image's path inside the first folder holding it: the snapshot root first, so a
    Hub image keeps the name it always had (JailBreakV_28K/llm_transfer_attack/...)."""
    for folder in folders:
        try:
            return image.relative_to(folder).as_posix()
        except ValueError:
            continue
    return image.name


def describe(build: dict) -> list[str]:
    """RT's image source and MR's rows used of the released ones, for the reproduction report."""
    if "mr_rows" not in build:  # older builds lack the counts
        return []
    mr, lines = build["mr_rows"], []
    dropped = len(mr["dropped_missing_image"])
    lines.append(f"MR (JailbreakV-28K mini): {mr['used']} of {mr['of']} rows used"
                 + (f", {dropped} left out because their image is missing "
                    f"(data.jailbreakv.mr_missing_images: drop)" if dropped else ""))
    source = (f"the user's image folder {build['images_dir']} and the Hub snapshot"
              if build.get("images_dir") else "the Hub snapshot only")
    if build.get("rt_images") == "coco":
        lines.append("RT images: COCO fallback (data.jailbreakv.rt_images: coco), a seeded "
                     "COCO image per RedTeam-2K query, not JailbreakV-28K's own "
                     "query-unrelated images")
    else:
        lines.append(f"RT images: JailbreakV-28K's query-unrelated images "
                     f"({build.get('rt_image_from')})")
    lines.append(f"JailbreakV-28K images from {source}")
    return lines


def build(inputs: dict[str, Path], out_dir, *, seed: int, log=None, rt_size: int | None,
          images_dir: str | None = None, rt_images: str = "jailbreakv",
          mr_missing_images: str = "error") -> dict:
    """Rule build_jailbreakv: the Hub snapshot, and the COCO folder when RT falls back to it."""
    return build_jailbreakv_sets(inputs["jbv"], out_dir, seed, rt_size=rt_size,
                                 images_dir=images_dir, rt_images=rt_images,
                                 coco_dir=inputs.get("coco"), mr_missing_images=mr_missing_images,
                                 log=log)


def inputs(data: dict) -> dict[str, str]:
    """The Hub snapshot, and the COCO folder when RT's images fall back to COCO."""
    found = {"jbv": "jailbreakv"}
    if data["jailbreakv"].get("rt_images") == "coco":
        found["coco"] = "coco"
    return found


def settings(config: dict) -> dict:
    block = config["data"]["jailbreakv"]
    return {"rt_size": config["data"]["sizes"]["rt"],
            **{k: block[k] for k in ("images_dir", "rt_images", "mr_missing_images")}}


# ------------------------------------------------------------------------- mirror stand-in

JBV_HEADER = ["id", "jailbreak_query", "redteam_query", "format", "policy", "image_path",
              "from", "selected_mini", "transfer_from_llm"]
REDTEAM_HEADER = ["id", "question", "policy", "from"]
# image_path prefixes by format (dataset card "Dataset Structure"; public loaders list
# llm_transfer_attack/{nature,noise,SD,blank}_*, query_related/{SD,typo}_*, figstep/*).
MIRROR_FORMATS = [
    ("Template", "llm_transfer_attack", "nature"), ("Persuade", "llm_transfer_attack", "noise"),
    ("Logic", "llm_transfer_attack", "blank"), ("Template", "llm_transfer_attack", "SD"),
    ("FigStep", "figstep", ""), ("Query-relevant", "query_related", "SD"),
    ("Query-relevant", "query_related", "typo"),
]
# The folder the authors' JailBreakV_28K.zip unpacks to: spelled with a lower-case k by the
# current public loader that unpacks it (microsoft/PyRIT, jailbreakv_28k_dataset.py and its
# test's zip members JailBreakV_28k/<image_path>); the builder accepts either spelling.
AUTHORS_ZIP_FOLDER = "JailBreakV_28k"
# The mirror's folder of what a cluster user fetches by hand (data.jailbreakv.images_dir).
AUTHORS_IMAGES = "jailbreakv-authors-images"


def mirror_repo(folder: Path, sizes, seed: int = 0, present_share: float = 0.4,
                authors: Path | None = None) -> dict:
    """The Hub repo JailbreakV-28K/JailBreakV-28k as its files: the three CSVs under
    JailBreakV_28K/ and only part of the images. The full set comes from the authors (a zip
    by request form, unpacked as AUTHORS_ZIP_FOLDER/<image_path>): written to `authors` if
    given, as the folder a cluster user fetches by hand."""
    import numpy as np

    from icet.mirror.data import (JAILBREAK_FRAME, NOUNS, POLICIES, SOURCES, image,
                                  request, write_csv)

    rng = np.random.default_rng(seed)
    base = folder / "JailBreakV_28K"
    questions = [request(rng) for _ in range(sizes.redteam)]
    policies = [str(rng.choice(POLICIES)) for _ in questions]
    write_csv(base / "RedTeam_2K.csv", REDTEAM_HEADER,
              [[i, q, p, str(rng.choice(SOURCES))] for i, (q, p) in enumerate(zip(questions, policies))])
    rows, images = [], []
    for i in range(sizes.full):
        k = int(rng.integers(len(questions)))
        fmt, group, prefix = MIRROR_FORMATS[i % len(MIRROR_FORMATS)]
        name = f"{prefix}_{i}.png" if prefix else f"{k}.png"
        path = f"{group}/{name}"
        images.append(path)
        long = i % 3 == 0  # LLM-transfer templates are long: many exceed 512 real tokens
        frame = " ".join([JAILBREAK_FRAME] * (sizes.long_words // len(JAILBREAK_FRAME.split()) + 1)) if long else ""
        query = (frame + questions[k]).strip() if group == "llm_transfer_attack" else (
            "the image shows a list . fill in each step in detail ." if group == "figstep"
            else f"the image shows a {rng.choice(NOUNS)} . {questions[k]}")
        rows.append([i, query, questions[k], fmt, policies[k], path, "redteam2k",
                     "True" if i < sizes.mini else "False", "llm" if long else ""])
    write_csv(base / "JailBreakV_28K.csv", JBV_HEADER, rows)
    write_csv(base / "mini_JailBreakV_28K.csv", JBV_HEADER, rows[:sizes.mini])
    present = sorted({img for j, img in enumerate(images) if rng.random() < present_share or j == 0})
    for j, path in enumerate(present):
        image(base / path, seed * 1000 + j)
    if authors is not None:
        for j, path in enumerate(sorted(set(images))):
            image(authors / AUTHORS_ZIP_FOLDER / path, seed * 1000 + 500 + j)
    (folder / "README.md").write_text(
        "---\nlicense: mit\ntask_categories:\n- text-generation\n---\n"
        "# JailBreakV-28K (mirror: layout only, fictional text)\n", encoding="utf-8")
    return {"rows": len(rows), "images_listed": len(set(images)), "images_present": len(present)}


def mirror(block: dict, site) -> dict:
    """The Hub repo, and the authors' full image set in the mirror's by-hand folder."""
    info = mirror_repo(site.scratch / "jbv", site.sizes, site.seed,
                       authors=site.by_hand / AUTHORS_IMAGES)
    site.repo(block["repo"], site.scratch / "jbv", "dataset", block.get("revision", "main"))
    return info


SOURCE = register(Source(
    name="jailbreakv",
    title="JailbreakV-28K",
    # The CSVs and the images the Hub holds (the snapshot fetches no other file type).
    downloads=(Download("jailbreakv", "snapshot", block="jailbreakv",
                        allow_patterns=("*.csv", "*.json", "*.md", "*.png", "*.jpg", "*.jpeg")),),
    # RT is the paper's harmful-only RedTeam-2K, but the toy may add safe prompts to it
    # (toy.sizes.rt_safe), so any kind.
    sets=(DataSet("rt", "train", "RT"),
          DataSet("mr", "safety", "MR", kinds=("harmful",))),
    inputs=inputs,
    settings=settings,
    build=build,
    describe=describe,
    mirror=mirror,
    gate=True,
))
