"""Catalogue cases for outputs checked before work, inputs read by the shared readers, and eval's up-front checks.

Promises (see tests/bad_input_harness.py): exit 2, one ``embedkit: error:`` line with a ``fix:`` hint, no
traceback, no output, temporary file or created parent folder left behind.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from bad_input_harness import (
    GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, Case, _beir, _encode, _good_pairs, _mine, _pairs, _w, check_case,
)


def _jsonl_gz(t: Path, body: str) -> str:
    path = t / "t.jsonl.gz"
    path.write_bytes(gzip.compress(body.encode("utf-8")))
    return str(path)


def _dir(p: Path) -> str:
    p.mkdir(parents=True)
    return str(p)


def _npy_with_ids_dir(t: Path) -> str:
    """An output path whose ids file (OUT.ids.txt) is taken by a folder."""
    _dir(t / "out.ids.txt")
    return str(t / "out.npy")


def _good_beir(t: Path) -> str:
    return _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS)


def _pickle_only(t: Path, tiny: str) -> str:
    """A model folder whose weights exist only as a pickle (config intact)."""
    out = t / "pickled"
    out.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (Path(tiny) / name).exists():
            shutil.copy(Path(tiny) / name, out / name)
    (out / "pytorch_model.bin").write_bytes(b"\x80\x04")
    return str(out)


GOOD_TEXTS = '{"text": "a"}\n'

CASES: list[Case] = [
    # ---- outputs: checked before any input is read or model loaded
    Case("encode: -o names an existing folder", lambda t, m, b: [
        "encode", "--model", m, "-i", _pairs(t, GOOD_TEXTS, "t.jsonl"), "-o", _dir(t / "out.npy")],
         ("out.npy", "is a folder"), "out.ids.txt", category="outputs"),
    Case("encode: the ids file path is an existing folder", lambda t, m, b: [
        "encode", "--model", m, "-i", _pairs(t, GOOD_TEXTS, "t.jsonl"), "-o", _npy_with_ids_dir(t)],
         ("out.ids.txt", "is a folder"), "out.npy", category="outputs"),
    Case("encode: a created output parent is removed when the input is bad", lambda t, m, b: [
        "encode", "--model", m, "-i", _pairs(t, '{"text": oops}\n', "t.jsonl"),
        "-o", str(t / "new" / "deeper" / "out.npy")],
         ("t.jsonl:1", "invalid JSON"), "new", category="outputs"),
    Case("encode: output name without .npy", lambda t, m, b: _encode(t, m, _pairs(t, GOOD_TEXTS, "t.jsonl"))[:-1] + [
        str(t / "out.txt")], ("--output", ".npy"), "out.txt", category="outputs"),
    Case("mine: -o names an existing folder", lambda t, m, b: _mine(
        t, m, _good_pairs(t))[:-1] + [_dir(t / "existing")],
         ("existing", "is a folder"), "existing/mined.jsonl", category="outputs"),
    Case("mine: a created output parent is removed when the pairs are bad", lambda t, m, b: [
        "mine", "--pairs", _pairs(t, '{"query": "q"}\n'), "--model", m, "-o", str(t / "made" / "sub" / "out.jsonl")],
         ("pairs.jsonl:1",), "made", category="outputs"),
    Case("mine: output parent is a file", lambda t, m, b: [
        "mine", "--pairs", _good_pairs(t), "--model", m, "-o", str(_w(t / "plainfile", "x") / "out.jsonl")],
         ("cannot create output folder", "plainfile"), "plainfile/out.jsonl", category="outputs"),
    # ---- inputs: the same readers (and file:line messages) as pairs and corpora
    Case("encode: CSV row with too many cells names file:line", lambda t, m, b: _encode(
        t, m, str(_w(t / "t.csv", 'id,text\n1,"two\nlines"\n2,too,many\n'))),
         ("t.csv:4", "columns"), "out.npy"),
    Case("encode: CSV without the text column", lambda t, m, b: _encode(t, m, str(_w(t / "t.csv", "id,body\n1,x\n"))),
         ("t.csv:1", "'text'"), "out.npy"),
    Case("encode: CSV with an empty text cell", lambda t, m, b: _encode(
        t, m, str(_w(t / "t.csv", "id,text\n1,x\n2,\n"))),
         ("t.csv:3", "empty"), "out.npy"),
    Case("encode: gzipped JSONL with bad JSON names the line", lambda t, m, b: _encode(
        t, m, _jsonl_gz(t, '{"text": "a"}\n{oops\n')),
         ("t.jsonl.gz:2", "invalid JSON"), "out.npy"),
    Case("encode: corrupt gzip file", lambda t, m, b: _encode(t, m, str(_w(t / "t.jsonl.gz", b"not gzip at all"))),
         ("t.jsonl.gz", "cannot read"), "out.npy"),
    Case("encode: unknown --role value", lambda t, m, b: _encode(
        t, m, _pairs(t, GOOD_TEXTS, "t.jsonl"), "--role", "passage"),
         ("--role", "passage"), "out.npy"),
    Case("encode: --batch-size 0", lambda t, m, b: _encode(
        t, m, _pairs(t, GOOD_TEXTS, "t.jsonl"), "--batch-size", "0"),
         ("--batch-size", ">= 1"), "out.npy"),
    # ---- eval: every checkpoint and data folder is checked before any encoding
    Case("eval: a corrupt second checkpoint is refused up front", lambda t, m, b: [
        "eval", b, str(_w(t / "broken" / "config.json", "{oops").parent), "--beir",
        _good_beir(t), "-o", str(t / "out"), "--no-progress"],
         ("broken", "config.json"), category="models"),
    Case("eval: a second checkpoint folder that is no model", lambda t, m, b: [
        "eval", b, _dir(t / "emptydir"), "--beir", _good_beir(t), "-o", str(t / "out"), "--no-progress"],
         ("emptydir", "not a model folder"), category="models"),
    Case("eval: a pickle-only second checkpoint", lambda t, m, b: [
        "eval", b, _pickle_only(t, b), "--beir",
        _good_beir(t), "-o", str(t / "out"), "--no-progress"],
         ("pickled", "pickle"), category="unsafe files"),
    Case("eval: BEIR folder without qrels", lambda t, m, b: [
        "eval", b, "--beir", _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES), "-o", str(t / "out")],
         ("qrels",)),
    Case("eval: a created output parent is removed when a checkpoint is bad", lambda t, m, b: [
        "eval", b, str(t / "nothere"), "--beir", _good_beir(t),
        "-o", str(t / "evparent" / "out")],
         ("nothere",), "evparent", category="outputs"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)
