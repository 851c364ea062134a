"""The bad-input catalogue: every CLI command, every kind of bad input -> one actionable line, exit 2, no output.

The harness (:class:`Case`, :func:`check_case`) is ``tests/bad_input_harness.py``; more cases by area live in
``tests/test_bad_inputs_*.py``. Three cases also run as real subprocesses to prove the console script behaves the
same. docs/reliability.md lists the catalogue by category.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bad_input_harness import (  # noqa: F401  (helpers used by the cases)
    CATEGORIES, GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, Case, _bad_soup_member, _beir, _encode, _good_pairs, _gpt2, _mine,
    _pairs, _recipe, _w, check_case, pickled_copy,
)

def _tiny_llama(tmp: Path, tiny: str) -> str:
    """A 1-layer random Llama with the tiny BERT's tokenizer (a decoder MNTP would accept)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    out = tmp / "llama"
    tok = AutoTokenizer.from_pretrained(tiny)
    LlamaModel(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


CASES: list[Case] = [
    # ---- encode
    Case("encode: malformed JSONL", lambda t, m, b: _encode(t, m, _pairs(t, '{"text": "a"}\n{"text": oops}\n', "t.jsonl")),
         ("t.jsonl:2", "invalid JSON"), "out.npy"),
    Case("encode: missing text field", lambda t, m, b: _encode(t, m, _pairs(t, '{"id": 1, "txt": "a"}\n', "t.jsonl")),
         ("t.jsonl:1", "'text' is missing"), "out.npy"),
    Case("encode: non-string text", lambda t, m, b: _encode(t, m, _pairs(t, '{"text": 42}\n', "t.jsonl")),
         ("t.jsonl:1", "not a string"), "out.npy"),
    Case("encode: non-UTF-8 bytes", lambda t, m, b: _encode(t, m, str(_w(t / "t.jsonl", b'{"text": "caf\xe9"}\n'))),
         ("t.jsonl:1", "UTF-8"), "out.npy"),
    Case("encode: duplicate ids", lambda t, m, b: _encode(
        t, m, _pairs(t, '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "t.jsonl")),
         ("duplicate id 'a'",), "out.npy"),
    Case("encode: empty input file", lambda t, m, b: _encode(t, m, _pairs(t, "", "t.jsonl")),
         ("holds no texts",), "out.npy"),
    Case("encode: missing model folder", lambda t, m, b: _encode(t, str(t / "nomodel"), _pairs(t, '{"text": "a"}\n', "t.jsonl")),
         ("nomodel", "not found"), "out.npy", category="models"),
    Case("encode: corrupt model folder", lambda t, m, b: _encode(
        t, str(_w(t / "broken" / "config.json", "{oops").parent), _pairs(t, '{"text": "a"}\n', "t.jsonl")),
         ("config.json", "cannot read"), "out.npy", category="models"),
    Case("encode: non-writable output path", lambda t, m, b: [
        "encode", "--model", m, "-i", _pairs(t, '{"text": "a"}\n', "t.jsonl"),
        "-o", str(_w(t / "afile", "x") / "sub" / "out.npy")],
         ("cannot create output folder",), "afile/sub", category="outputs"),
    # ---- mine
    Case("mine: malformed JSON line", lambda t, m, b: _mine(t, m, _pairs(t, '{"query": "q", "positive": "d"}\n{bad\n')),
         ("pairs.jsonl:2", "invalid JSON")),
    Case("mine: missing query", lambda t, m, b: _mine(t, m, _pairs(t, '{"positive": "d"}\n')),
         ("pairs.jsonl:1", "'query'")),
    Case("mine: empty positive", lambda t, m, b: _mine(t, m, _pairs(t, '{"query": "q", "positive": "  "}\n')),
         ("pairs.jsonl:1", "empty")),
    Case("mine: wrong type for negatives", lambda t, m, b: _mine(
        t, m, _pairs(t, '{"query": "q", "positive": "d", "negatives": 5}\n')),
         ("pairs.jsonl:1", "negatives")),
    Case("mine: malformed CSV line", lambda t, m, b: _mine(
        t, m, str(_w(t / "pairs.csv", 'query,positive\n"q1,d1\n'))),
         ("pairs.csv",)),
    Case("mine: duplicate ids", lambda t, m, b: _mine(t, m, _pairs(
        t, '{"id": "x", "query": "q", "positive": "d"}\n{"id": "x", "query": "q2", "positive": "d2"}\n')),
         ("pairs.jsonl:2", "duplicate")),
    Case("mine: qrels name a missing document", lambda t, m, b: _mine(t, m, _beir(
        t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels="query-id\tcorpus-id\tscore\nq1\tnope\t1\n", split="train")),
         ("train.tsv:2", "nope")),
    Case("mine: empty corpus", lambda t, m, b: _mine(t, m, _beir(t, corpus="", queries=GOOD_QUERIES, qrels=GOOD_QRELS, split="train")),
         ("corpus",)),
    Case("mine: BEIR folder without the train split", lambda t, m, b: _mine(t, m, _beir(
        t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS)),
         ("'train' split", "train.tsv")),
    Case("mine: contradictory window", lambda t, m, b: _mine(t, m, _good_pairs(t), "--range-min", "30", "--range-max", "10"),
         ("range",)),
    # ---- train
    Case("train: unknown recipe key", lambda t, m, b: [
        "train", _recipe(t, b, _good_pairs(t), "colour: blue\n"), "-o", str(t / "out")],
         ("colour",), category="recipes"),
    Case("train: misspelled key", lambda t, m, b: [
        "train", _recipe(t, b, _good_pairs(t)), "--set", "training.bach_size=4", "-o", str(t / "out")],
         ("training.bach_size", "training.batch_size"), category="recipes"),
    Case("train: wrong value type", lambda t, m, b: [
        "train", _recipe(t, b, _good_pairs(t)), "--set", "training.lr=fast", "-o", str(t / "out")],
         ("training.lr",), category="recipes"),
    Case("train: YAML syntax error", lambda t, m, b: [
        "train", str(_w(t / "recipe.yaml", "model:\n  name: [minilm\n")), "-o", str(t / "out")],
         ("recipe.yaml:",), category="recipes"),
    Case("train: contradictory options", lambda t, m, b: [
        "train", _recipe(t, b, _good_pairs(t), "losses:\n  infonce: null\n  listwise: {weight: 1.0}\n"),
        "-o", str(t / "out")],
         ("listwise",), category="recipes"),
    Case("train: unsupported architecture for bidirectional", lambda t, m, b: [
        "train", _recipe(t, _gpt2(t, b), _good_pairs(t)), "--set", "model.bidirectional=true", "-o", str(t / "out")],
         ("gpt2", "not verified"), category="models"),
    Case("train: output folder holds a different run", lambda t, m, b: [
        "train", _recipe(t, b, _good_pairs(t)), "-o", str(_w(t / "prev" / "recipe.yaml", "model: {name: other}\n").parent)],
         ("prev",), "prev/final", category="outputs"),
    Case("train: data file missing", lambda t, m, b: [
        "train", _recipe(t, b, str(t / "missing.jsonl")), "-o", str(t / "out")],
         ("missing.jsonl",)),
    # ---- eval
    Case("eval: BEIR folder without queries", lambda t, m, b: [
        "eval", b, "--beir", _beir(t, corpus=GOOD_CORPUS, qrels=GOOD_QRELS), "-o", str(t / "out")],
         ("queries.jsonl",)),
    Case("eval: dangling qrels", lambda t, m, b: [
        "eval", b, "--beir", _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES,
                                   qrels="query-id\tcorpus-id\tscore\nq9\td1\t1\n"), "-o", str(t / "out")],
         ("test.tsv:2", "q9")),
    Case("eval: hub task while offline", lambda t, m, b: ["eval", b, "--tasks", "SciFact", "-o", str(t / "out")],
         ("SciFact", "offline")),
    Case("eval: missing checkpoint", lambda t, m, b: [
        "eval", str(t / "nockpt"), "--beir", _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS),
        "-o", str(t / "out")],
         ("nockpt",), category="models"),
    # ---- soup
    Case("soup: members with different shapes", lambda t, m, b: ["soup", b, _bad_soup_member(t, b), "-o", str(t / "out")],
         ("shape",), category="models"),
    Case("soup: weights do not match members", lambda t, m, b: [
        "soup", b, b, "--method", "weighted", "--weights", "1", "-o", str(t / "out")],
         ("weights",)),
    Case("soup: pickle-only member", lambda t, m, b: [
        "soup", b, str(_w(t / "pkl" / "pytorch_model.bin", b"\x80\x04").parent), "-o", str(t / "out")],
         ("pkl",), category="unsafe files"),
    # ---- loaders outside load_model: the same pickle / adapter checks
    Case("mntp: pickle-only decoder", lambda t, m, b: [
        "mntp", "--model", pickled_copy(t, _tiny_llama(t, b)), "--data", _good_pairs(t), "--batch-size", "2", "-o", str(t / "out")],
         ("pytorch_model.bin", "pickle"), category="unsafe files"),
    Case("mntp: LoRA adapter folder instead of a causal LM", lambda t, m, b: [
        "mntp", "--model", str(_w(t / "adapter" / "adapter_config.json", '{"peft_type": "LORA"}').parent),
        "--data", _good_pairs(t), "--batch-size", "2", "-o", str(t / "out")],
         ("LoRA adapter", "base model"), category="models"),
    Case("mine: pickle-only cross-encoder teacher", lambda t, m, b: _mine(
        t, b, _good_pairs(t), "--teacher", pickled_copy(t, b), "--no-cache"),
         ("--teacher", "pickle"), category="unsafe files"),
    Case("soup: greedy without held-out data", lambda t, m, b: ["soup", b, b, "--method", "greedy", "-o", str(t / "out")],
         ("greedy", "--eval")),
]



@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)


def all_cases() -> list[Case]:
    """Every catalogue case: this file's and those of each ``tests/test_bad_inputs_*.py``."""
    cases = list(CASES)
    here = Path(__file__).parent
    for path in sorted(here.glob("test_bad_inputs_*.py")):
        cases += importlib.import_module(path.stem).CASES
    return cases


def test_catalogue_is_big_enough() -> None:
    cases = all_cases()
    assert len(cases) >= 60
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    assert {c.category for c in cases} <= set(CATEGORIES)
    commands = {c.name.split(":")[0] for c in cases}
    assert {"encode", "mine", "train", "eval", "soup"} <= commands

@pytest.mark.parametrize("argv_tail", [
    ["mine", "--pairs", "MISSING.jsonl", "-o", "OUT.jsonl"],
    ["train", "MISSING.yaml"],
    ["frobnicate"],
])
def test_console_script_one_line_exit_2(tmp_path: Path, argv_tail: list[str]) -> None:
    argv = [a.replace("MISSING", str(tmp_path / "missing")).replace("OUT", str(tmp_path / "out")) for a in argv_tail]
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("embedkit: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_debug_flag_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli", "--debug", "train", str(tmp_path / "no.yaml")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "embedkit: error:" in proc.stderr
