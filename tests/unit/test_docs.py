"""The README and docs/ point at things that exist: every relative link resolves to a file in
the checkout, and every ``fsd.*`` name is importable (a module, or an attribute of one) or is a
tag value defined in fsd/tracking/tags.py. No sentence is pinned."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from fsd.tracking import tags

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")),
        REPO / "benchmarks" / "README.md"]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NAME = re.compile(r"(?<![\w/.-])(fsd(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
TAG_VALUES = {getattr(tags, n) for n in tags.__all__ if isinstance(getattr(tags, n), str)}


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _ids(paths):
    return [str(p.relative_to(REPO)) for p in paths]


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_relative_link_resolves(doc):
    broken = []
    for n, line in enumerate(doc.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            path = (doc.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"line {n}: {target}")
    assert not broken, f"{doc.name}: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_every_fsd_name_resolves(doc):
    unknown = sorted({f"line {n}: {name}"
                      for n, line in enumerate(doc.read_text().splitlines(), 1)
                      for name in NAME.findall(line.replace("`", " "))
                      if name not in TAG_VALUES and not _resolves(name)})
    assert not unknown, f"{doc.name}: {unknown}"


def test_a_stale_name_or_link_would_be_found(tmp_path):
    assert not _resolves("fsd.train.metrics.map_at_k") and _resolves("fsd.evaluation.metrics")
    assert _resolves("fsd.evaluation.metrics.map_at_k") and "fsd.at_chance" in TAG_VALUES
    assert LINK.findall("see [the doc](docs/x.md#y) and ![pic](a.png)") == ["docs/x.md#y", "a.png"]


def test_the_readme_stays_a_front_door():
    """At most 180 lines: detail belongs to docs/ by topic."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 180
