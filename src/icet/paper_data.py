"""Turn the paper's raw downloads into test-set JSONL rows (docs/contracts.md, "Data set rows").

Test sets, as in Bachu et al.: CP (10 AdvBench prompts x 10 safe images), AC (the other
AdvBench prompts, each with a COCO image), RT (JailbreakV-28K's RedTeam-2K queries), MR
(JailbreakV-28K's mini split, jailbreak prompts with their images), VQA (VQA-v2 val subset,
the utility check) and XSTest (safe prompts that look unsafe, for over-refusal).

Each builder writes its whole output folder atomically: the JSONL files, an `images/` folder
holding every image the rows use (hard links or copies, never symlinks, so a folder can be
moved or archived as one piece) and `build.json`, the seeded choices and input checksums
that made it. Rows are checked (icet.rows.validate_dataset, the one data-set check, with each
set's own rules) before anything is renamed into place: a bad input stops the build with one
line naming the file and the row.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from icet.errors import IcetError
from icet.inputs import check_image, relative_path
from icet.io import atomic_dir, read_json, sha256_file, write_json, write_jsonl
from icet.logs import setup_logging
from icet.rows import validate_dataset
from icet.seeding import generator

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Column names by meaning, first match wins (case-insensitive): the data sets renamed
# columns between revisions, and a missing one must fail naming the file and the column.
ADVBENCH_COLUMNS = {"prompt": ("goal", "behavior", "prompt"), "category": ("category",)}
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
XSTEST_COLUMNS = {
    "id": ("id", "id_v2"),
    "prompt": ("prompt",),
    "type": ("type",),
    "label": ("label",),
}

# XSTest v2 (Röttger et al., NAACL 2024; the authors' xstest_prompts.csv): 450 prompts, of
# which 250 safe ones (10 types x 25) and 200 unsafe contrast_ ones.
XSTEST_V2_ROWS, XSTEST_V2_SAFE = 450, 250

# JailbreakV-28K's LLM-transfer attacks pair each query with a query-unrelated image (natural
# photo, blank, noise); its other images (SD_related, figstep, typo) depict the query itself.
JBV_BENIGN_IMAGE_PREFIXES = ("nature_", "blank_", "noise_")


# --------------------------------------------------------------------------------------
# Reading raw inputs


def _read_csv(path: Path) -> tuple[list[dict], list[int], list[str]]:
    """Rows (keys stripped), the file line where each row ends, and the header."""
    if not path.is_file():
        raise IcetError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows, lines = [], []
            for row in reader:
                rows.append({(k or "").strip(): (v if v is not None else "")
                             for k, v in row.items()})
                lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise IcetError(f"{path}: unreadable CSV ({err})") from None
    if not header:
        raise IcetError(f"{path}: empty CSV (no header)")
    return rows, lines, header


def _read_parquet(path: Path) -> tuple[list[dict], list[int], list[str]]:
    """Rows of a parquet file as strings, like _read_csv; "lines" are 1-based row numbers."""
    if not path.is_file():
        raise IcetError(f"{path}: file not found")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise IcetError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise IcetError(f"{path}: unreadable parquet ({str(err).splitlines()[0]})") from None
    header = [str(name).strip() for name in table.column_names]
    rows = [{str(k).strip(): "" if v is None else str(v) for k, v in r.items()}
            for r in table.to_pylist()]
    return rows, list(range(1, len(rows) + 1)), header


def _read_table(path: Path) -> tuple[list[dict], list[int], list[str], str]:
    """A CSV or parquet file's rows, line numbers, header, and the word for a position."""
    if path.suffix.lower() == ".parquet":
        return (*_read_parquet(path), "row")
    return (*_read_csv(path), "line")


def _columns(path: Path, header: list[str], wanted: dict[str, tuple[str, ...]],
             required: Iterable[str]) -> dict[str, str | None]:
    """Map meanings to the header's actual column names; a required one missing is an error."""
    by_lower = {h.lower(): h for h in header}
    found = {name: next((by_lower[a.lower()] for a in aliases if a.lower() in by_lower), None)
             for name, aliases in wanted.items()}
    for name in required:
        if found[name] is None:
            raise IcetError(f"{path}: missing column {wanted[name][0]!r} "
                            f"(also accepted: {', '.join(wanted[name][1:]) or 'none'})")
    return found


def _text(row: dict, column: str | None) -> str:
    return (row.get(column) or "").strip() if column else ""


def _require_text(row: dict, column: str, path: Path, line: int, unit: str = "line") -> str:
    value = _text(row, column)
    if not value:
        raise IcetError(f"{path}: {unit} {line}: empty {column!r}")
    return value


def _list_images(folder: Path) -> list[Path]:
    """Every image file under `folder`, sorted by path so a seeded draw is reproducible."""
    if not folder.is_dir():
        raise IcetError(f"{folder}: image folder not found")
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_file(root: Path, name: str, required: bool = True) -> Path | None:
    """The file called `name` (any case) under `root`, the shallowest if there are several."""
    hits = sorted((p for p in root.rglob("*") if p.is_file() and p.name.lower() == name.lower()),
                  key=lambda p: (len(p.parts), str(p)))
    if not hits and required:
        raise IcetError(f"{root}: no {name} found")
    return hits[0] if hits else None


def _inputs(**paths: Path) -> dict:
    """Input files with checksums for build.json: which bytes made this set."""
    return {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in paths.items()}


def _id_width(n: int) -> int:
    return max(3, len(str(max(n - 1, 0))))


# --------------------------------------------------------------------------------------
# Images and writing


class _ImageStore:
    """Places source images under <out>/images/<group>/ and hands back their relative paths."""

    def __init__(self, root: Path):
        self.root = root
        self.by_source: dict[Path, str] = {}
        self.taken: set[str] = set()

    def place(self, src: Path, group: str, name: str, where: str) -> str:
        src = Path(src)
        if not src.is_file():
            raise IcetError(f"{where}: image {src} not found")
        key = src.resolve()
        if key in self.by_source:
            return self.by_source[key]
        check_image(src, f"{where}: image {src}")  # decoded in full now, not mid-sweep
        rel = f"images/{group}/{name}"
        stem, suffix = os.path.splitext(rel)
        n = 1
        while rel in self.taken:  # two sources with one name: number the later one
            rel, n = f"{stem}-{n}{suffix}", n + 1
        dst = self.root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(key, dst)  # same bytes, no second copy of a large image set
        except OSError:
            shutil.copyfile(key, dst)
        self.taken.add(rel)
        self.by_source[key] = rel
        return rel


def _row(id_: str, prompt: str, kind: str, category: str, source: str, image_src: Path,
         image_group: str, image_name: str, where: str, answer: str | None = None) -> dict:
    """A row whose image is still a source path; `_write_sets` places it."""
    return {"id": id_, "prompt": prompt, "kind": kind, "category": category, "answer": answer,
            "source": source, "_image": (Path(image_src), image_group, image_name, where)}


def _validate(jsonl: Path, tmp: Path, out: Path) -> None:
    """The data-set row contract (icet.rows), run before the rename; errors name the final path."""
    try:
        validate_dataset(jsonl, testset=jsonl.stem)
    except IcetError as err:
        raise IcetError(str(err).replace(str(tmp), str(out))) from None


def _write_sets(out_dir: str | os.PathLike, sets: dict[str, list[dict]], build: dict,
                logger) -> dict:
    """Place images, validate and write every set plus build.json, all in one atomic rename."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        store = _ImageStore(tmp)
        for filename, rows in sets.items():
            final = []
            for row in rows:
                src, group, name, where = row["_image"]
                image = store.place(src, group, name, where)
                final.append({**{k: v for k, v in row.items() if k != "_image"}, "image": image})
            write_jsonl(tmp / filename, final)
            _validate(tmp / filename, tmp, out)
            sets[filename] = final
        build = {**build, "outputs": {name: {"rows": len(rows)} for name, rows in sets.items()},
                 "n_images": len(store.taken)}
        write_json(tmp / "build.json", build)
    for filename, rows in sets.items():
        logger.info("%s: %d rows", out / filename, len(rows))
    return build


def _pick(rng, pool: Sequence, n: int):
    """n seeded picks from pool: without replacement while the pool lasts, else with."""
    idx = rng.choice(len(pool), size=n, replace=n > len(pool))
    return [pool[int(i)] for i in idx]


# --------------------------------------------------------------------------------------
# Builders


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
    logger = setup_logging(log, "paper_data")
    path = Path(advbench_csv)
    rows, lines, header = _read_csv(path)
    cols = _columns(path, header, ADVBENCH_COLUMNS, required=["prompt"])
    prompts = [(i, _require_text(r, cols["prompt"], path, line),
                _text(r, cols["category"]) or "advbench")  # AdvBench itself has no categories
               for i, (r, line) in enumerate(zip(rows, lines))]
    if len(prompts) <= cp_prompts:
        raise IcetError(f"{path}: {len(prompts)} prompts; CP needs {cp_prompts} and AC at "
                        f"least one more")
    images = sorted((Path(p) for p in safe_images), key=str)
    if len(images) < cp_images:
        raise IcetError(f"safe_images: {len(images)} given, CP needs {cp_images}")
    coco = _list_images(Path(coco_dir))
    if not coco:
        raise IcetError(f"{coco_dir}: no images")

    rng = generator(seed)
    cp_rows = sorted(int(i) for i in rng.choice(len(prompts), size=cp_prompts, replace=False))
    cp_imgs = sorted(int(i) for i in rng.choice(len(images), size=cp_images, replace=False))
    cp_set = set(cp_rows)
    ac_prompts = [p for p in prompts if p[0] not in cp_set]
    ac_imgs = _pick(rng, coco, len(ac_prompts))

    width = _id_width(len(prompts))
    cp = [_row(f"cp-{i:0{width}d}-{k:02d}", text, "harmful", category, "advbench-cp",
               images[j], "safe", images[j].name, f"safe_images[{j}]")
          for i, text, category in (prompts[r] for r in cp_rows)
          for k, j in enumerate(cp_imgs)]
    ac = [_row(f"ac-{i:0{width}d}", text, "harmful", category, "advbench-ac",
               img, "coco", img.name, f"{coco_dir}")
          for (i, text, category), img in zip(ac_prompts, ac_imgs)]
    build = {
        "builder": "advbench",
        "seed": seed,
        "params": {"cp_prompts": cp_prompts, "cp_images": cp_images},
        "inputs": _inputs(advbench_csv=path),
        "cp_prompt_rows": cp_rows,  # 0-based data rows of the AdvBench CSV
        "cp_images": [str(images[j]) for j in cp_imgs],
        "coco_dir": str(coco_dir),
        "coco_pool_size": len(coco),
    }
    return _write_sets(out_dir, {"cp.jsonl": cp, "ac.jsonl": ac}, build, logger)


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
        path = _find_file(jbv_root, name, required=False)
        if path is None:
            continue
        rows, _, header = _read_csv(path)
        cols = _columns(path, header, JBV_PAIR_COLUMNS, required=[])
        if cols["query"] is None or cols["image"] is None:
            continue
        for r in rows:
            image = _text(r, cols["image"])
            if image and Path(image.replace("\\", "/")).name.lower().startswith(tuple(prefixes)):
                pairs.setdefault(_text(r, cols["query"]), image)
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
    logger = setup_logging(log, "paper_data")
    if rt_images not in RT_IMAGE_SOURCES:
        raise IcetError(f"data.jailbreakv.rt_images: {rt_images!r} not in {RT_IMAGE_SOURCES}")
    if mr_missing_images not in MR_MISSING_POLICIES:
        raise IcetError(f"data.jailbreakv.mr_missing_images: {mr_missing_images!r} not in "
                        f"{MR_MISSING_POLICIES}")
    root = Path(jbv_dir)
    if not root.is_dir():
        raise IcetError(f"{root}: JailbreakV-28K folder not found")
    rt_path = _find_file(root, "RedTeam_2K.csv")
    mini_path = _find_file(root, "mini_JailBreakV_28K.csv")
    folders = _image_folders(root, mini_path.parent, images_dir)

    # MR: the mini split as released; its image paths are relative to the CSV's folder.
    rows, lines, header = _read_csv(mini_path)
    cols = _columns(mini_path, header, MINI_COLUMNS,
                    required=["prompt", "request", "image", "category"])
    width = _id_width(len(rows))
    mr_total = len(rows)
    mr, formats, mr_missing = [], Counter(), []
    for i, (r, line) in enumerate(zip(rows, lines)):
        where = f"{mini_path}: line {line}"
        value = _require_text(r, cols["image"], mini_path, line)
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        prompt = _require_text(r, cols["prompt"], mini_path, line)
        request = _require_text(r, cols["request"], mini_path, line)
        category = _require_text(r, cols["category"], mini_path, line)
        image = _resolve_dataset_image(value, folders, where)
        if image is None:
            mr_missing.append((f"mr-{key}", f"{where}: image {value} not found"))
            continue
        formats[_text(r, cols["format"]) or "unknown"] += 1
        mr.append({**_row(f"mr-{key}", prompt, "harmful", category, "jailbreakv-mini", image,
                          "jbv", _image_name(image, [root, *folders]), where),
                   "request": request})

    # RT: RedTeam-2K queries.
    rows, lines, header = _read_csv(rt_path)
    cols = _columns(rt_path, header, REDTEAM_COLUMNS, required=["prompt", "category"])
    rng = generator(seed)
    order = list(range(len(rows)))
    if rt_size is not None and rt_size < len(rows):
        order = sorted(int(i) for i in rng.choice(len(rows), size=rt_size, replace=False))
    width = _id_width(len(rows))
    if rt_images == "coco":
        if coco_dir is None:
            raise IcetError("data.jailbreakv.rt_images: coco needs the COCO image folder")
        pool, group = _list_images(Path(coco_dir)), "coco"
        pairs = {}
    else:
        pairs = {} if cols["image"] else _benign_image_of_query(root, benign_image_prefixes)
        every = sorted({p for f in folders if f.is_dir() for p in _list_images(f)}, key=str)
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
        prompt = _require_text(r, cols["prompt"], rt_path, line)
        listed = (_text(r, cols["image"]) or pairs.get(prompt, "")) if rt_images != "coco" else ""
        if listed:
            image = _resolve_dataset_image(listed, folders, where)
            if image is None:
                rt_missing.append(f"{where}: image {listed} not found")
                continue
            image_from["dataset"] += 1
        else:
            image = pool[int(rng.integers(len(pool)))]
            image_from["coco_draw" if rt_images == "coco" else "seeded_draw"] += 1
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        category = _require_text(r, cols["category"], rt_path, line)
        name = image.name if group == "coco" else _image_name(image, [root, *folders])
        rt.append(_row(f"rt-{key}", prompt, "harmful", category, "jailbreakv-redteam2k",
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
        "inputs": _inputs(redteam_csv=rt_path, mini_csv=mini_path),
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
    return _write_sets(out_dir, {"rt.jsonl": rt, "mr.jsonl": mr}, build, logger)


def _image_name(image: Path, folders: Sequence[Path]) -> str:
    """The image's path inside the first folder holding it: the snapshot root first, so a
    Hub image keeps the name it always had (JailBreakV_28K/llm_transfer_attack/...)."""
    for folder in folders:
        try:
            return image.relative_to(folder).as_posix()
        except ValueError:
            continue
    return image.name


_IMAGE_ID = re.compile(r"(\d+)$")


def majority_answer(answers: Sequence[str]) -> str:
    """The most common human answer (lower-cased, spaces collapsed); ties go to the first given."""
    normal = [" ".join(a.lower().split()) for a in answers if a and a.strip()]
    if not normal:
        raise ValueError("no answers")
    return Counter(normal).most_common(1)[0][0]  # Counter keeps first-seen order among ties


def build_vqa_set(
    questions_json: str | os.PathLike,
    annotations_json: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int,
    seed: int,
    log: str | os.PathLike | None = None,
) -> dict:
    """A seeded `size`-question subset of VQA-v2 val; answer = the majority human answer,
    answers = all human answers as the annotation gives them (for the VQA-v2 accuracy).

    VQA-v2 val asks about COCO val2014 images (`COCO_val2014_000000xxxxxx.jpg`, 40,504 of
    them, a 6 GB zip). We draw only among questions whose image is in `images_dir`: the
    config's COCO folder (val2017, 5,000 images with the same COCO ids, as COCO 2017 re-split
    the same images), so no second image download is needed; point data.coco.url at
    val2014.zip to draw from every question. The pool sizes go into build.json (and from
    there into the manifest). Writes out_dir/{vqa.jsonl, build.json, images/}.
    """
    logger = setup_logging(log, "paper_data")
    q_path, a_path = Path(questions_json), Path(annotations_json)
    questions = read_json(q_path)
    annotations = read_json(a_path)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise IcetError(f"{q_path}: missing key 'questions'")
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise IcetError(f"{a_path}: missing key 'annotations'")
    every = sorted(questions["questions"], key=lambda q: q.get("question_id", -1))
    if size > len(every):
        raise IcetError(f"{q_path}: {len(every)} questions, fewer than size={size}")
    by_qid = {}
    for n, a in enumerate(annotations["annotations"], start=1):
        if "question_id" not in a or not a.get("answers"):
            raise IcetError(f"{a_path}: annotation {n}: missing question_id or answers")
        by_qid[a["question_id"]] = a
    images = {}
    for p in _list_images(Path(images_dir)):
        m = _IMAGE_ID.search(p.stem)  # COCO_val2014_000000123456.jpg -> 123456
        if m:
            images.setdefault(int(m.group(1)), p)

    for n, q in enumerate(every, start=1):
        if "image_id" not in q:
            raise IcetError(f"{q_path}: question {n} (question_id {q.get('question_id', '?')}): "
                            f"missing key 'image_id'")
    qs = [q for q in every if int(q["image_id"]) in images]
    if size > len(qs):
        raise IcetError(f"{q_path}: only {len(qs)} of {len(every)} questions have their image in "
                        f"{images_dir} ({len(images)} images), fewer than size={size}; use COCO "
                        f"val2014 (data.coco.url: http://images.cocodataset.org/zips/val2014.zip)")
    rng = generator(seed)
    chosen = sorted(int(i) for i in rng.choice(len(qs), size=size, replace=False))
    rows = []
    for i in chosen:
        q = qs[i]
        where = f"{q_path}: question_id {q.get('question_id', '?')}"
        for key in ("question_id", "image_id", "question"):
            if key not in q:
                raise IcetError(f"{where}: missing key {key!r}")
        qid = q["question_id"]
        ann = by_qid.get(qid)
        if ann is None:
            raise IcetError(f"{a_path}: no annotation for question_id {qid}")
        image = images.get(int(q["image_id"]))
        if image is None:
            raise IcetError(f"{where}: image_id {q['image_id']} not in {images_dir}")
        humans = [a.get("answer", "") for a in ann["answers"]]
        answer = majority_answer(humans)
        rows.append(_row(f"vqa-{qid}", q["question"].strip(), "benign",
                         ann.get("question_type") or "vqa", "vqa-v2-val", image, "coco",
                         image.name, where, answer=answer))
        # all 10 human answers, as given: the VQA-v2 accuracy (icet.judges.vqa) needs them
        rows[-1]["answers"] = humans
    build = {
        "builder": "vqa",
        "seed": seed,
        "params": {"size": size},
        "inputs": _inputs(questions_json=q_path, annotations_json=a_path),
        "question_ids": [qs[i]["question_id"] for i in chosen],
        "images_dir": str(images_dir),
        # Questions are drawn only where their COCO image is present.
        "question_pool": {"rule": "image present in images_dir", "questions": len(every),
                          "with_image": len(qs), "images": len(images)},
    }
    return _write_sets(out_dir, {"vqa.jsonl": rows}, build, logger)


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
    logger = setup_logging(log, "paper_data")
    path = Path(xstest_file)
    rows, lines, header, unit = _read_table(path)
    cols = _columns(path, header, XSTEST_COLUMNS, required=["prompt", "type"])
    pool = sorted((Path(p) for p in images), key=str)
    if not pool:
        raise IcetError("images: none given for XSTest")
    rng = generator(seed)
    width = _id_width(len(rows))
    kept = []
    for i, (r, line) in enumerate(zip(rows, lines)):
        kind = _require_text(r, cols["type"], path, line, unit)
        label = _text(r, cols["label"]).lower()
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
    picks = _pick(rng, pool, len(kept))
    out_rows = []
    for (i, r, line, kind), image in zip(kept, picks):
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        out_rows.append(_row(f"xstest-{key}", _require_text(r, cols["prompt"], path, line, unit),
                             "lookalike", kind, "xstest-v2", image, "safe", image.name,
                             f"images ({image})"))
    if len(rows) == XSTEST_V2_ROWS and len(out_rows) != XSTEST_V2_SAFE:
        logger.warning("%s: %d rows (all of XSTest v2) but %d safe, not %d", path, len(rows),
                       len(out_rows), XSTEST_V2_SAFE)
    build = {
        "builder": "xstest",
        "seed": seed,
        "params": {},
        "inputs": _inputs(xstest_prompts=path),
        "format": path.suffix.lower().lstrip("."),
        "safe_rule": "label == 'safe' if a label column exists, else type not starting 'contrast_'",
        "kept": len(out_rows),
        "dropped": len(rows) - len(out_rows),
    }
    return _write_sets(out_dir, {"xstest.jsonl": out_rows}, build, logger)


# --------------------------------------------------------------------------------------
# What a build chose, for the manifest and the reproduction report


def build_choices(build_json: str | os.PathLike) -> dict:
    """A build.json without its long per-row lists: the choices and counts behind a set."""
    build = read_json(Path(build_json))
    if not isinstance(build, dict) or "builder" not in build:
        raise IcetError(f"{build_json}: not a data set build.json (no 'builder')")
    return {k: v for k, v in build.items()
            if not (isinstance(v, list) and len(v) > 20)}


def describe_build(build: dict) -> list[str]:
    """Plain lines naming what a paper data set build chose where the source fell short."""
    kind = build.get("builder")
    if kind == "jailbreakv" and "mr_rows" in build:  # older builds lack the counts
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
    if kind == "vqa" and "question_pool" in build:
        pool = build["question_pool"]
        return [f"VQA-v2: {build['params']['size']} questions drawn among the "
                f"{pool['with_image']} of {pool['questions']} whose COCO image is present "
                f"({pool['images']} images in {build['images_dir']})"]
    if kind == "xstest":
        return [f"XSTest: {build['kept']} safe prompts kept, {build['dropped']} unsafe "
                f"(contrast_) left out ({build.get('format', 'csv')})"]
    return []
