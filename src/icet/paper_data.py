"""Turn the paper's raw downloads into test-set JSONL rows (docs/contracts.md, "Data set rows").

Test sets, as in Bachu et al.: CP (10 AdvBench prompts x 10 safe images), AC (the other
AdvBench prompts, each with a COCO image), RT (JailbreakV-28K's RedTeam-2K queries), MR
(JailbreakV-28K's mini split, jailbreak prompts with their images), VQA (VQA-v2 val subset,
the utility check) and XSTest (safe prompts that look unsafe, for over-refusal).

Each builder writes its whole output folder atomically: the JSONL files, an `images/` folder
holding every image the rows use (hard links or copies, never symlinks, so a folder can be
moved or archived as one piece) and `build.json`, the seeded choices and input checksums
that made it. Rows are checked (icet.toy.datasets.validate_dataset, the one data-set check)
before anything is renamed into place: a bad input stops the build with one line naming the
file and the row.
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
from icet.io import atomic_dir, read_json, sha256_file, write_json, write_jsonl
from icet.logs import setup_logging
from icet.seeding import generator

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")

# Column names by meaning, first match wins (case-insensitive): the data sets renamed
# columns between revisions, and a missing one must fail naming the file and the column.
ADVBENCH_COLUMNS = {"prompt": ("goal", "behavior", "prompt"), "category": ("category",)}
MINI_COLUMNS = {
    "id": ("id",),
    "prompt": ("jailbreak_query", "jailbreak_prompt"),
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


def _require_text(row: dict, column: str, path: Path, line: int) -> str:
    value = _text(row, column)
    if not value:
        raise IcetError(f"{path}: line {line}: empty {column!r}")
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
    """The shared data-set check, run before the rename; errors name the final path."""
    from icet.toy.datasets import validate_dataset

    try:
        validate_dataset(jsonl)
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


def _resolve_dataset_image(value: str, folders: Sequence[Path]) -> Path | None:
    rel = value.strip().replace("\\", "/").lstrip("/")
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


def build_jailbreakv_sets(
    jbv_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    seed: int,
    rt_size: int | None = None,  # None: all of RedTeam-2K; else a seeded subset (CPU budgets)
    benign_image_prefixes: Sequence[str] = JBV_BENIGN_IMAGE_PREFIXES,
    log: str | os.PathLike | None = None,
) -> dict:
    """RT (RedTeam-2K queries with a benign image) and MR (the 280-row mini split, as given).

    RT's image: the CSV's own image column if it has one; else the query-unrelated image
    JailbreakV-28K pairs with that query; else a seeded draw from the data set's
    query-unrelated images (all its images if it has none). Writes rt.jsonl and mr.jsonl.
    """
    logger = setup_logging(log, "paper_data")
    root = Path(jbv_dir)
    if not root.is_dir():
        raise IcetError(f"{root}: JailbreakV-28K folder not found")
    rt_path = _find_file(root, "RedTeam_2K.csv")
    mini_path = _find_file(root, "mini_JailBreakV_28K.csv")

    # MR: the mini split as released; its image paths are relative to the CSV's folder.
    rows, lines, header = _read_csv(mini_path)
    cols = _columns(mini_path, header, MINI_COLUMNS, required=["prompt", "image", "category"])
    width = _id_width(len(rows))
    mr, formats = [], Counter()
    for i, (r, line) in enumerate(zip(rows, lines)):
        where = f"{mini_path}: line {line}"
        value = _require_text(r, cols["image"], mini_path, line)
        image = _resolve_dataset_image(value, [mini_path.parent, root])
        if image is None:
            raise IcetError(f"{where}: image {value} not found under {mini_path.parent} or {root}")
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        formats[_text(r, cols["format"]) or "unknown"] += 1
        mr.append(_row(f"mr-{key}", _require_text(r, cols["prompt"], mini_path, line), "harmful",
                       _require_text(r, cols["category"], mini_path, line), "jailbreakv-mini",
                       image, "jbv", image.relative_to(root).as_posix(), where))

    # RT: RedTeam-2K queries.
    rows, lines, header = _read_csv(rt_path)
    cols = _columns(rt_path, header, REDTEAM_COLUMNS, required=["prompt", "category"])
    rng = generator(seed)
    order = list(range(len(rows)))
    if rt_size is not None and rt_size < len(rows):
        order = sorted(int(i) for i in rng.choice(len(rows), size=rt_size, replace=False))
    pairs = {} if cols["image"] else _benign_image_of_query(root, benign_image_prefixes)
    every = _list_images(root)
    pool = [p for p in every if p.name.lower().startswith(tuple(benign_image_prefixes))] or every
    if not pool:
        raise IcetError(f"{root}: no images to pair with RedTeam-2K queries")
    width = _id_width(len(rows))
    rt, image_from = [], Counter()
    for i in order:
        r, line = rows[i], lines[i]
        where = f"{rt_path}: line {line}"
        prompt = _require_text(r, cols["prompt"], rt_path, line)
        listed = _text(r, cols["image"]) or pairs.get(prompt, "")
        if listed:
            image = _resolve_dataset_image(listed, [rt_path.parent, root])
            if image is None:
                raise IcetError(f"{where}: image {listed} not found under {rt_path.parent} "
                                f"or {root}")
            image_from["dataset"] += 1
        else:
            image = pool[int(rng.integers(len(pool)))]
            image_from["seeded_draw"] += 1
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        category = _require_text(r, cols["category"], rt_path, line)
        rt.append(_row(f"rt-{key}", prompt, "harmful", category, "jailbreakv-redteam2k",
                       image, "jbv", image.relative_to(root).as_posix(), where))

    build = {
        "builder": "jailbreakv",
        "seed": seed,
        "params": {"rt_size": rt_size, "benign_image_prefixes": list(benign_image_prefixes)},
        "inputs": _inputs(redteam_csv=rt_path, mini_csv=mini_path),
        "rt_rows": order if rt_size is not None else "all",
        "rt_image_from": dict(sorted(image_from.items())),
        "rt_image_pool_size": len(pool),
        "mr_formats": dict(sorted(formats.items())),
    }
    return _write_sets(out_dir, {"rt.jsonl": rt, "mr.jsonl": mr}, build, logger)


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

    Writes out_dir/{vqa.jsonl, build.json, images/}.
    """
    logger = setup_logging(log, "paper_data")
    q_path, a_path = Path(questions_json), Path(annotations_json)
    questions = read_json(q_path)
    annotations = read_json(a_path)
    if not isinstance(questions, dict) or "questions" not in questions:
        raise IcetError(f"{q_path}: missing key 'questions'")
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise IcetError(f"{a_path}: missing key 'annotations'")
    qs = sorted(questions["questions"], key=lambda q: q.get("question_id", -1))
    if size > len(qs):
        raise IcetError(f"{q_path}: {len(qs)} questions, fewer than size={size}")
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
        # all 10 human answers, as given: the VQA-v2 accuracy (icet.utility) needs them
        rows[-1]["answers"] = humans
    build = {
        "builder": "vqa",
        "seed": seed,
        "params": {"size": size},
        "inputs": _inputs(questions_json=q_path, annotations_json=a_path),
        "question_ids": [qs[i]["question_id"] for i in chosen],
        "images_dir": str(images_dir),
    }
    return _write_sets(out_dir, {"vqa.jsonl": rows}, build, logger)


def build_xstest_set(
    xstest_csv: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    seed: int,
    log: str | os.PathLike | None = None,
) -> dict:
    """XSTest's safe prompts (label "safe", or a type not starting "contrast_"), each with a
    seeded safe image, kind "lookalike": they measure over-refusal. Writes xstest.jsonl.
    """
    logger = setup_logging(log, "paper_data")
    path = Path(xstest_csv)
    rows, lines, header = _read_csv(path)
    cols = _columns(path, header, XSTEST_COLUMNS, required=["prompt", "type"])
    pool = sorted((Path(p) for p in images), key=str)
    if not pool:
        raise IcetError("images: none given for XSTest")
    rng = generator(seed)
    width = _id_width(len(rows))
    kept = []
    for i, (r, line) in enumerate(zip(rows, lines)):
        kind = _require_text(r, cols["type"], path, line)
        label = _text(r, cols["label"]).lower()
        safe = label == "safe" if label else not kind.lower().startswith("contrast_")
        if safe:
            kept.append((i, r, line, kind))
    picks = _pick(rng, pool, len(kept))
    out_rows = []
    for (i, r, line, kind), image in zip(kept, picks):
        key = _text(r, cols["id"]) or f"{i:0{width}d}"
        out_rows.append(_row(f"xstest-{key}", _require_text(r, cols["prompt"], path, line),
                             "lookalike", kind, "xstest-v2", image, "safe", image.name,
                             f"images ({image})"))
    build = {
        "builder": "xstest",
        "seed": seed,
        "params": {},
        "inputs": _inputs(xstest_csv=path),
        "safe_rule": "label == 'safe' if a label column exists, else type not starting 'contrast_'",
        "kept": len(out_rows),
        "dropped": len(rows) - len(out_rows),
    }
    return _write_sets(out_dir, {"xstest.jsonl": out_rows}, build, logger)
