"""The docs a newcomer reads: README on one screen, every page reachable from the index, no
link to a page that is not there, and docs that speak of the software, not of its making."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_readme_fits_one_screen_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 70
    assert "make toy" in text and "make test" in text
    assert "docs/README.md" in text


def test_every_docs_page_is_indexed_and_every_link_resolves():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\(([^)#]+)\)", index))
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert pages <= linked, f"not in docs/README.md: {sorted(pages - linked)}"
    assert all((DOCS / link).is_file() for link in linked), sorted(l for l in linked if not (DOCS / l).is_file())


def test_docs_name_no_tracker_issue():
    """Docs describe the software; the tracker's history stays in the tracker."""
    pattern = re.compile(r"\b(issues? \d+|issue tracker)\b", re.IGNORECASE)
    for page in [ROOT / "README.md", *DOCS.glob("*.md")]:
        hits = [line for line in page.read_text(encoding="utf-8").splitlines() if pattern.search(line)]
        assert not hits, f"{page.name}: {hits[0]}"
