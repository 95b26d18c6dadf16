"""The user's documentation stands alone: no pointers to the developers' spec, shared folder or
issue tracker, and every relative link resolves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_pointers_outside_the_repository(page):
    text = page.read_text()
    for pattern in (r"\.\./shared", r"SPEC §", r"(?i)\bissue[ -]\d+\b"):
        hits = [m.group(0) for m in re.finditer(pattern, text)]
        assert not hits, f"{page.name} cites {hits[:3]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
