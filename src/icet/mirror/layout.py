"""Check a built mirror against the layout table in README.md (beside this file).

README.md states, with its sources, what each real repository or URL serves; its
```layout``` block restates that as rows `source | file | kind | expected` that this module
checks, so a mirror file that drifts from what README says the source serves fails a test
(tests/datasets/test_mirror.py). Sources: `hub:<model|dataset>:<org/name>@<revision>` (the snapshot
that revision points to), `http` (the URL files, `<host>/<path>`) or `by-hand` (the mirror's
folders of what a user fetches by hand). A file `a.zip!m` is
member m of a zip; a `*` in the file's path matches one path part (e.g. a pinned commit).
Kinds:
  csv        header == expected columns (in order)
  parquet    column names == expected (in order)
  json       top-level keys == expected (any order)
  json-has   top-level keys include the expected ones
  json-items `key=a,b,c`: every item of the list under key has exactly those keys
  pickle-globals  a torch.save zip whose pickle names every expected global (module.Name)
  torch-keys top-level keys of a torch.save dict == expected (any order; read weights-only
             with icet.judges.toxicity's allow-list)
  zip        every member matches the glob `expected` (and there is one)
  zip-has    at least one member matches the glob `expected`
  file       the file exists;  absent: it does not
  glob       at least one file under `file` matches the glob `expected`
  images-partly-missing  `expected` names the CSV's image column: some listed images exist
             beside the CSV's folder, some do not (as on the Hub)
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from icet.mirror import hub

README = Path(__file__).with_name("README.md")


@dataclass(frozen=True)
class Row:
    source: str
    file: str
    kind: str
    expected: str

    def __str__(self) -> str:
        return f"{self.source} {self.file} ({self.kind})"


def read_layout(readme: str | Path = README) -> list[Row]:
    """The rows of README's ```layout``` block (comments and blank lines skipped)."""
    text = Path(readme).read_text(encoding="utf-8")
    block = text.split("```layout\n", 1)[1].split("```", 1)[0]
    rows = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) != 4:
            raise ValueError(f"{readme}: layout row needs 4 fields: {line!r}")
        rows.append(Row(*parts))
    return rows


def _base(mirror: Path, source: str) -> Path:
    if source == "http":
        return mirror / "http"
    if source == "by-hand":  # what a user fetches by hand (not from the Hub or a URL)
        return mirror
    kind, rest = source.split(":", 2)[1:]
    repo, revision = rest.rsplit("@", 1)
    return hub.snapshot_path(mirror / "hf" / "hub", repo, kind, revision)


def _read(base: Path, file: str) -> bytes:
    if "!" in file:
        archive, member = file.split("!", 1)
        with zipfile.ZipFile(base / archive) as zf:
            return zf.read(member)
    return (base / file).read_bytes()


def _csv_rows(raw: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(raw.decode("utf-8"))))


def check_row(mirror: Path, row: Row) -> str | None:
    """None if the mirror matches the row, else one line saying how it differs."""
    try:
        base = _base(mirror, row.source)
    except (OSError, ValueError) as err:
        return f"{row}: source not in the mirror ({err})"
    want = [w.strip() for w in row.expected.split(",")] if row.expected not in ("", "-") else []
    if "*" in row.file.split("!", 1)[0]:  # a path part that varies (a pinned commit): glob it
        pattern, _, member = row.file.partition("!")
        hits = sorted(base.glob(pattern))
        if not hits:
            return f"{row}: no file matches"
        row = Row(row.source, hits[0].relative_to(base).as_posix() + (f"!{member}" if member else ""),
                  row.kind, row.expected)
    path = base / row.file.split("!", 1)[0]
    if row.kind == "absent":
        return f"{row}: present but the source does not serve it" if path.exists() else None
    if not path.exists():
        return f"{row}: missing"
    if row.kind == "file":
        return None
    if row.kind == "glob":
        hits = [p for p in path.rglob("*") if p.is_file() and fnmatch.fnmatch(p.relative_to(path).as_posix(), row.expected)]
        return None if hits else f"{row}: no file matches {row.expected}"
    if row.kind == "zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
        odd = [n for n in names if not fnmatch.fnmatchcase(n, row.expected)]
        return (f"{row}: members {odd[:3]} do not match {row.expected}" if odd or not names else None)
    if row.kind == "zip-has":
        with zipfile.ZipFile(path) as zf:
            hit = any(fnmatch.fnmatchcase(n, row.expected) for n in zf.namelist())
        return None if hit else f"{row}: no member matches {row.expected}"
    try:
        raw = _read(base, row.file)
    except KeyError:  # zipfile's word for an absent member
        return f"{row}: member missing"
    if row.kind == "csv":
        got = _csv_rows(raw)[0]
    elif row.kind == "parquet":
        import pyarrow.parquet as pq

        got = pq.read_schema(io.BytesIO(raw)).names
    elif row.kind == "json":
        got, want = sorted(json.loads(raw)), sorted(want)
    elif row.kind == "json-has":
        lacking = [k for k in want if k not in json.loads(raw)]
        return f"{row}: lacks keys {lacking}" if lacking else None
    elif row.kind == "pickle-globals":
        got = _pickle_globals(raw)
        lacking = [g for g in want if g not in got]
        return f"{row}: names no {lacking} (it names {sorted(got)})" if lacking else None
    elif row.kind == "torch-keys":
        import torch

        from icet.judges.toxicity import LIGHTNING_GLOBALS

        allowed = [(stand_in, name) for name, stand_in in LIGHTNING_GLOBALS.items()]
        with torch.serialization.safe_globals(allowed):
            got, want = sorted(torch.load(io.BytesIO(raw), weights_only=True)), sorted(want)
    elif row.kind == "json-items":
        key, cols = row.expected.split("=", 1)
        want = sorted(c.strip() for c in cols.split(","))
        items = json.loads(raw)[key]
        odd = [sorted(item) for item in items if sorted(item) != want]
        return f"{row}: items of {key!r} have keys {odd[0]}, README says {want}" if odd or not items else None
    elif row.kind == "images-partly-missing":
        rows = _csv_rows(raw)
        col = rows[0].index(row.expected)
        listed = {r[col] for r in rows[1:]}
        present = {v for v in listed if (path.parent / v).is_file()}
        if not present or present == listed:
            return (f"{row}: {len(present)} of {len(listed)} listed images present; README says "
                    f"some but not all are on the Hub")
        return None
    else:
        return f"{row}: unknown kind {row.kind!r}"
    return None if got == want else f"{row}: has {got}, README says {want}"


def _pickle_globals(raw: bytes) -> set[str]:
    """The GLOBALs the pickle inside a torch.save zip names, as "module.Name"."""
    import pickletools

    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def check_mirror(mirror: str | Path, readme: str | Path = README) -> list[str]:
    """Every difference between the mirror and README's layout table (empty: none)."""
    return [p for row in read_layout(readme) if (p := check_row(Path(mirror), row))]
