"""What every builder shares: reading a source's tables, finding its files and images, and
writing a source's sets in one atomic step.

A builder writes its whole output folder atomically: the JSONL files, an `images/` folder
holding every image the rows use (hard links or copies, never symlinks, so a folder can be
moved or archived as one piece) and `build.json`, the seeded choices and input checksums that
made it. Rows are checked (icet.rows.validate_dataset, the one data-set check, with each set's
own rules) before anything is renamed into place: a bad input stops the build with one line
naming the file and the row.
"""

from __future__ import annotations

import csv
import fnmatch
import os
import shutil
from pathlib import Path
from typing import Iterable, Sequence

from icet.errors import IcetError
from icet.inputs import check_image
from icet.io import atomic_dir, read_json, sha256_file, write_json, write_jsonl
from icet.rows import validate_dataset

# What counts as an image in a source's folders (COCO's .jpg, JailbreakV-28K's .png/.jpeg,
# FigStep's .png), one list for every builder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


# ---------------------------------------------------------------------------- reading


def read_csv(path: Path) -> tuple[list[dict], list[int], list[str]]:
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


def read_parquet(path: Path) -> tuple[list[dict], list[int], list[str]]:
    """Rows of a parquet file as strings, like read_csv; "lines" are 1-based row numbers."""
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


def read_table(path: Path) -> tuple[list[dict], list[int], list[str], str]:
    """A CSV or parquet file's rows, line numbers, header, and the word for a position."""
    if path.suffix.lower() == ".parquet":
        return (*read_parquet(path), "row")
    return (*read_csv(path), "line")


def columns(path: Path, header: list[str], wanted: dict[str, tuple[str, ...]],
            required: Iterable[str]) -> dict[str, str | None]:
    """Map meanings to the header's actual column names (aliases, first match wins,
    case-insensitive: sources renamed columns between revisions); a required one missing
    stops naming the file and the column."""
    by_lower = {h.lower(): h for h in header}
    found = {name: next((by_lower[a.lower()] for a in aliases if a.lower() in by_lower), None)
             for name, aliases in wanted.items()}
    for name in required:
        if found[name] is None:
            raise IcetError(f"{path}: missing column {wanted[name][0]!r} "
                            f"(also accepted: {', '.join(wanted[name][1:]) or 'none'})")
    return found


def text(row: dict, column: str | None) -> str:
    return (row.get(column) or "").strip() if column else ""


def require_text(row: dict, column: str, path: Path, line: int, unit: str = "line") -> str:
    value = text(row, column)
    if not value:
        raise IcetError(f"{path}: {unit} {line}: empty {column!r}")
    return value


# ---------------------------------------------------------------------------- finding files


def list_images(folder: Path, required: bool = False) -> list[Path]:
    """Every image file under `folder`, sorted by path so a seeded draw is reproducible;
    `required`: none is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IcetError(f"{folder}: image folder not found")
    images = sorted(p for p in folder.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if required and not images:
        raise IcetError(f"{folder}: no images found")
    return images


def find_file(root: Path, name: str, required: bool = True) -> Path | None:
    """The file called `name` (any case) under `root`, the shallowest if there are several."""
    hits = sorted((p for p in root.rglob("*") if p.is_file() and p.name.lower() == name.lower()),
                  key=lambda p: (len(p.parts), str(p)))
    if not hits and required:
        raise IcetError(f"{root}: no {name} found")
    return hits[0] if hits else None


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


def input_hashes(**paths: Path) -> dict:
    """Input files with checksums for build.json: which bytes made this set."""
    return {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in paths.items()}


def id_width(n: int) -> int:
    return max(3, len(str(max(n - 1, 0))))


def pick(rng, pool: Sequence, n: int):
    """n seeded picks from pool: without replacement while the pool lasts, else with."""
    idx = rng.choice(len(pool), size=n, replace=n > len(pool))
    return [pool[int(i)] for i in idx]


# ---------------------------------------------------------------------------- writing


class ImageStore:
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


def row(id_: str, prompt: str, kind: str, category: str, source: str, image_src: Path,
        image_group: str, image_name: str, where: str, answer: str | None = None) -> dict:
    """A row whose image is still a source path; `write_sets` places it."""
    return {"id": id_, "prompt": prompt, "kind": kind, "category": category, "answer": answer,
            "source": source, "_image": (Path(image_src), image_group, image_name, where)}


def _validate(jsonl: Path, tmp: Path, out: Path) -> None:
    """The data-set row contract (icet.rows), run before the rename; errors name the final path."""
    try:
        validate_dataset(jsonl, testset=jsonl.stem)
    except IcetError as err:
        raise IcetError(str(err).replace(str(tmp), str(out))) from None


def write_sets(out_dir: str | os.PathLike, sets: dict[str, list[dict]], build: dict,
               logger) -> dict:
    """Place images, validate and write every set plus build.json, all in one atomic rename."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        store = ImageStore(tmp)
        for filename, rows in sets.items():
            final = []
            for r in rows:
                src, group, name, where = r["_image"]
                image = store.place(src, group, name, where)
                final.append({**{k: v for k, v in r.items() if k != "_image"}, "image": image})
            write_jsonl(tmp / filename, final)
            _validate(tmp / filename, tmp, out)
            sets[filename] = final
        build = {**build, "outputs": {name: {"rows": len(rows)} for name, rows in sets.items()},
                 "n_images": len(store.taken)}
        write_json(tmp / "build.json", build)
    for filename, rows in sets.items():
        logger.info("%s: %d rows", out / filename, len(rows))
    return build


# ---------------------------------------------------------------------------- what a build chose


def build_choices(build_json: str | os.PathLike) -> dict:
    """A build.json without its long per-row lists: the choices and counts behind a set."""
    build = read_json(Path(build_json))
    if not isinstance(build, dict) or "builder" not in build:
        raise IcetError(f"{build_json}: not a data set build.json (no 'builder')")
    return {k: v for k, v in build.items()
            if not (isinstance(v, list) and len(v) > 20)}


def describe_build(build: dict) -> list[str]:
    """Plain lines naming what a build chose where its source fell short (the source's
    `describe`; none for a builder no longer registered)."""
    from icet.datasets.base import registry

    source = registry().get(build.get("builder"))
    return source.describe(build) if source is not None else []
