"""Synthetic pairs keep where they came from: ``query_type`` and ``doc_id`` survive a write / read round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from embedkit.data.readers import load_pairs, write_pairs
from embedkit.data.schema import Pair
from embedkit.errors import InputError


def test_query_type_and_doc_id_round_trip(tmp_path: Path) -> None:
    pairs = [Pair(query="how to list files", positives=["ls lists a directory"], query_type="question", doc_id="d7"),
             Pair(query="copy files", positives=["cp copies files"])]
    path = tmp_path / "p.jsonl"
    write_pairs(pairs, path)
    back = load_pairs(path)
    assert [(p.query_type, p.doc_id) for p in back] == [("question", "d7"), (None, None)]
    assert '"query_type": "question"' in path.read_text().splitlines()[0]
    assert "query_type" not in path.read_text().splitlines()[1]


def test_query_type_must_be_a_string(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"query": "q", "positive": "d", "query_type": 3}\n')
    with pytest.raises(InputError, match="'query_type'"):
        load_pairs(path)
