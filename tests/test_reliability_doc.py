"""docs/reliability.md lists the bad-input catalogue by category, and the list agrees with the tests."""

from __future__ import annotations

import re
from pathlib import Path

from bad_input_harness import CATEGORIES
from test_bad_inputs import all_cases

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"


def _listed() -> dict[str, list[str]]:
    """``{category: [case names]}`` from the doc's ``### category (N)`` sections of ``- name — ...`` lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        head = re.match(r"### (.+?) \((\d+)\)$", line)
        if head:
            current = head.group(1)
            out[current] = []
            continue
        if line.startswith("#"):
            current = None
        elif current is not None and line.startswith("- "):
            out[current].append(line[2:].split(" — ", 1)[0])
    return out


def test_every_case_is_listed_under_its_category_and_nothing_else() -> None:
    listed = _listed()
    cases = all_cases()
    want: dict[str, list[str]] = {}
    for c in cases:
        want.setdefault(c.category, []).append(c.name)
    assert set(listed) <= set(CATEGORIES)
    assert {k: sorted(v) for k, v in listed.items()} == {k: sorted(v) for k, v in want.items()}
    for cat, names in listed.items():  # the counts in the headings are right
        assert re.search(rf"### {re.escape(cat)} \({len(names)}\)", DOC.read_text(encoding="utf-8"))


def test_catalogue_holds_at_least_sixty_cases_in_every_category_but_interrupts() -> None:
    cases = all_cases()
    assert len(cases) >= 60
    assert {c.category for c in cases} == set(CATEGORIES) - {"interrupts"}  # interrupts exit 130: test_startup.py
