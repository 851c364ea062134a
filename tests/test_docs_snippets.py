"""Every recipe snippet in the docs is a valid recipe: a reader who copies one gets no validation error.

A ```yaml block whose top-level keys are all recipe sections is merged over a one-data-set base (a snippet may
show only the section it explains) and validated with :func:`embedkit.training.config.parse_recipe`; other YAML
blocks (launch configs, records) must at least parse."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from embedkit.training.config import Recipe, _deep_merge, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
BASE = {"data": {"datasets": [{"path": "pairs.jsonl"}]}}


def _snippets() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        for i, m in enumerate(re.finditer(r"```ya?ml\n(.*?)```", path.read_text(encoding="utf-8"), re.S)):
            out.append((f"{path.name}#{i}", m.group(1)))
    return out


SNIPPETS = _snippets()


def test_the_docs_have_recipe_snippets() -> None:
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize(("where", "text"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_every_recipe_snippet_validates(where: str, text: str) -> None:
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not set(data) <= set(Recipe.model_fields):
        return  # not a recipe (a launch config, a record): parsing was the check
    merged = copy.deepcopy(BASE)
    if "synth" in data or ("data" in data and "datasets" in (data["data"] or {})):
        merged = {}
    _deep_merge(merged, data)
    parse_recipe(merged)
