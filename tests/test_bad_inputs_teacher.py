"""Bad-input catalogue: ``embedkit teacher`` (pairs, settings, the encoder it starts from, its output folder),
``embedkit eval --rerank`` (the teacher folder and its options) and ``embedkit mine --teacher --num-candidates``
(teacher scoring of the candidate lists).

Each case: exit 2, one line naming what and where, a fix, no traceback, nothing left behind (the harness checks
it: tests/bad_input_harness.py). Every check runs before a model is trained or a checkpoint evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_input_harness import (
    GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, Case, _beir, _good_pairs, _mine, _pairs, _w, check_case, pickled_copy,
)


def _mined(t: Path) -> str:
    """Pairs that carry negatives, as embedkit mine writes them."""
    rows = [{"query": f"query number {i}", "positive": f"document number {i} text",
             "negatives": [f"document number {(i + 1) % 8} text"]} for i in range(8)]
    return _pairs(t, "".join(json.dumps(r) + "\n" for r in rows), "mined.jsonl")


def _teacher(t: Path, model: str, pairs: str, *extra: str) -> list[str]:
    return ["teacher", "--pairs", pairs, "--model", model, "--steps", "1", "--batch-size", "2",
            "--max-seq-length", "32", "-o", str(t / "out"), *extra]


def _rerank(t: Path, b: str, teacher: str, *extra: str) -> list[str]:
    beir = _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS)
    return ["eval", b, "--beir", beir, "--rerank", teacher, "--no-progress", "-o", str(t / "out"), *extra]


CASES: list[Case] = [
    # ---- inputs
    Case("teacher: pairs without negatives name the mine command", lambda t, m, b: _teacher(t, b, _good_pairs(t)),
         ("good.jsonl", "has negatives", "embedkit mine --pairs")),
    Case("teacher: malformed JSON line in the pairs", lambda t, m, b: _teacher(
        t, b, _pairs(t, '{"query": "q", "positive": "d", "negatives": ["n"]}\n{oops\n')),
         ("pairs.jsonl:2", "invalid JSON")),
    Case("teacher: unknown --loss", lambda t, m, b: _teacher(t, b, _mined(t), "--loss", "triplet"),
         ("--loss", "triplet")),
    Case("teacher: --steps 0", lambda t, m, b: _teacher(t, b, _mined(t), "--steps", "0"),
         ("--steps", ">= 1")),
    Case("teacher: --lr infinity", lambda t, m, b: _teacher(t, b, _mined(t), "--lr", "inf"),
         ("--lr", "finite")),
    Case("teacher: --warmup-ratio 1", lambda t, m, b: _teacher(t, b, _mined(t), "--warmup-ratio", "1"),
         ("--warmup-ratio", "< 1")),
    Case("eval: --rerank without a BEIR folder", lambda t, m, b: [
        "eval", b, "--sts", str(_w(t / "sts.jsonl", '{"sentence1": "a", "sentence2": "b", "score": 1}\n')),
        "--rerank", b, "-o", str(t / "out")],
         ("--rerank", "BEIR folder")),
    Case("eval: --rerank-top-k 0", lambda t, m, b: _rerank(t, b, b, "--rerank-top-k", "0"),
         ("--rerank-top-k", ">= 1")),
    Case("mine: --num-candidates without a teacher", lambda t, m, b: _mine(
        t, b, _good_pairs(t), "--num-candidates", "20"),
         ("--num-candidates", "no teacher is given")),
    Case("mine: --num-candidates below --num-negatives", lambda t, m, b: _mine(
        t, b, _good_pairs(t), "--teacher", b, "--num-negatives", "3", "--num-candidates", "2"),
         ("num_candidates (2)", "num_negatives (3)")),
    Case("mine: --num-candidates 0", lambda t, m, b: _mine(t, b, _good_pairs(t), "--num-candidates", "0"),
         ("--num-candidates", ">= 1")),
    Case("mine: --shard-size 0 for the encoding and score caches", lambda t, m, b: _mine(
        t, b, _good_pairs(t), "--shard-size", "0"),
         ("--shard-size", ">= 1")),
    # ---- models
    Case("mine: --num-candidates teacher folder that is no CrossEncoder", lambda t, m, b: _mine(
        t, b, _good_pairs(t), "--num-negatives", "1", "--num-candidates", "4",
        "--teacher", str(_w(t / "noteacher" / "notes.txt", "x").parent)),
         ("--teacher", "noteacher", "not a CrossEncoder folder"), category="models"),
    Case("teacher: missing encoder folder", lambda t, m, b: _teacher(t, str(t / "noencoder"), _mined(t)),
         ("--model", "noencoder", "not found"), category="models"),
    Case("teacher: encoder folder that is no model", lambda t, m, b: _teacher(
        t, str(_w(t / "emptydir" / "notes.txt", "x").parent), _mined(t)),
         ("emptydir", "not a model folder"), category="models"),
    Case("teacher: --max-seq-length beyond the encoder's positions", lambda t, m, b: _teacher(
        t, b, _mined(t), "--max-seq-length", "4096"),
         ("--max-seq-length", "4096", "128 positions"), category="models"),
    Case("eval: --rerank folder that is no CrossEncoder", lambda t, m, b: _rerank(
        t, b, str(_w(t / "noce" / "notes.txt", "x").parent)),
         ("--rerank", "noce", "not a CrossEncoder folder"), category="models"),
    # ---- outputs
    Case("teacher: output folder already exists", lambda t, m, b: _teacher(t, b, _mined(t))[:-1] + [
        str(_w(t / "prev" / "config.json", "{}").parent)],
         ("prev", "already exists", "--overwrite"), category="outputs"),
    Case("teacher: output path is a file", lambda t, m, b: _teacher(t, b, _mined(t))[:-1] + [
        str(_w(t / "afile", "x"))],
         ("afile", "is a file"), category="outputs"),
    Case("teacher: output parent is a file", lambda t, m, b: _teacher(t, b, _mined(t))[:-1] + [
        str(_w(t / "plainfile", "x") / "ce")],
         ("cannot create output folder", "plainfile"), "plainfile/ce", category="outputs"),
    Case("teacher: a bad pairs file leaves no output parent behind", lambda t, m, b: _teacher(
        t, b, _pairs(t, '{"query": "q"}\n'))[:-1] + [str(t / "made" / "sub" / "ce")],
         ("pairs.jsonl:1",), "made", category="outputs"),
    # ---- unsafe files
    Case("teacher: pickle-only encoder", lambda t, m, b: _teacher(t, pickled_copy(t, b), _mined(t)),
         ("pytorch_model.bin", "pickle"), category="unsafe files"),
    Case("eval: pickle-only --rerank teacher", lambda t, m, b: _rerank(t, b, pickled_copy(t, b)),
         ("--rerank", "pickle"), category="unsafe files"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)
