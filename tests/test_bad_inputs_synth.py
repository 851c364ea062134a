"""Bad-input catalogue: ``embedkit synth`` (corpus, settings, generator and round-trip models, outputs, partial
files). Every case fails before a query is generated: one line, exit 2, no output and no partial file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_input_harness import Case, _pairs, _w, check_case, pickled_copy

DOCS = '{"id": "ls", "text": "ls lists the files of a directory"}\n{"id": "cp", "text": "cp copies files"}\n'


def _synth(t: Path, corpus: str | None, *extra: str) -> list[str]:
    corpus = corpus if corpus is not None else _pairs(t, DOCS, "docs.jsonl")
    return ["synth", "--corpus", corpus, "-o", str(t / "out"), "--no-progress", *extra]


def _crop(t: Path, *extra: str) -> list[str]:
    return _synth(t, None, "--method", "crop", *extra)


def _tiny_causal(t: Path, tiny: str) -> str:
    """A 1-layer random LlamaForCausalLM with the tiny BERT's tokenizer (a folder that could generate)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = t / "lm"
    tok = AutoTokenizer.from_pretrained(tiny)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1,
                                 pad_token_id=tok.pad_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _partial(t: Path, text: str) -> Path:
    return _w(t / "out.partial", text)


def _other_run_partial(t: Path, version: int | None = None) -> list[str]:
    """The partial file of a crop run with seed 1, then a resume with seed 2 (or, given ``version``, the same
    settings in a partial file of that format version)."""
    from embedkit.synth.config import SynthConfig
    from embedkit.synth.corpus import read_documents
    from embedkit.synth.pipeline import _header

    argv = _crop(t, "--resume", "--seed", "2")
    docs = read_documents(t / "docs.jsonl")
    header = _header(SynthConfig(method="crop", seed=1 if version is None else 2), docs)
    _partial(t, json.dumps({**header, **({} if version is None else {"embedkit_synth": version})}) + "\n")
    return argv


CASES: list[Case] = [
    # ---- inputs: the corpus
    Case("synth: missing corpus file", lambda t, m, b: _synth(t, str(t / "nope.jsonl"), "--method", "crop"),
         ("--corpus", "does not exist")),
    Case("synth: malformed corpus line", lambda t, m, b: _synth(
        t, _pairs(t, '{"text": "a"}\n{"text": oops}\n', "docs.jsonl"), "--method", "crop"),
         ("docs.jsonl:2", "invalid JSON")),
    Case("synth: corpus record without text", lambda t, m, b: _synth(
        t, _pairs(t, '{"id": "a", "body": "x"}\n', "docs.jsonl"), "--method", "crop"),
         ("docs.jsonl:1", "'text' is missing")),
    Case("synth: empty corpus", lambda t, m, b: _synth(t, _pairs(t, "", "docs.jsonl"), "--method", "crop"),
         ("holds no documents",)),
    Case("synth: duplicate document ids", lambda t, m, b: _synth(
        t, _pairs(t, '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "docs.jsonl"), "--method", "crop"),
         ("docs.jsonl:2", "duplicate document id 'a'")),
    Case("synth: corpus folder without corpus.jsonl", lambda t, m, b: _synth(
        t, str(_w(t / "folder" / "x.txt", "x").parent), "--method", "crop"),
         ("--corpus", "without corpus.jsonl")),
    Case("synth: missing examples file", lambda t, m, b: _synth(t, None, "--model", _tiny_causal(t, b),
                                                                 "--examples", str(t / "ex.jsonl")),
         ("--examples", "does not exist")),
    Case("synth: malformed examples file", lambda t, m, b: _synth(
        t, None, "--model", _tiny_causal(t, b), "--examples", _pairs(t, '{"query": "q"}\n', "ex.jsonl")),
         ("ex.jsonl:1", "positive")),
    # ---- settings
    Case("synth: unknown query type", lambda t, m, b: _crop(t, "--query-types", "question,riddle"),
         ("--query-types", "unknown query type 'riddle'")),
    Case("synth: zero queries per document", lambda t, m, b: _crop(t, "--queries-per-doc", "0"),
         ("--queries-per-doc", ">= 1")),
    Case("synth: unknown method", lambda t, m, b: _synth(t, None, "--method", "magic"),
         ("--method", "invalid value 'magic'", "llm, crop")),
    Case("synth: crop ratios reversed", lambda t, m, b: _crop(t, "--crop-min-ratio", "0.6", "--crop-max-ratio", "0.2"),
         ("crop_min_ratio (0.6) is larger",)),
    Case("synth: examples with the crop method", lambda t, m, b: _crop(t, "--examples", _pairs(t, DOCS, "ex.jsonl")),
         ("examples", "method crop")),
    Case("synth: round-trip k 0", lambda t, m, b: _crop(t, "--round-trip-model", m, "--round-trip-k", "0"),
         ("--round-trip-k", ">= 1")),
    # ---- models
    Case("synth: missing generator folder", lambda t, m, b: _synth(t, None, "--model", str(t / "nolm")),
         ("nolm", "not found"), category="models"),
    Case("synth: encoder as generator", lambda t, m, b: _synth(t, None, "--model", b),
         ("no causal-LM head", "BertModel"), category="models"),
    Case("synth: sentence-transformers folder as generator", lambda t, m, b: _synth(t, None, "--model", m),
         ("sentence-transformers", "not a text generator"), category="models"),
    Case("synth: missing round-trip encoder", lambda t, m, b: _crop(t, "--round-trip-model", str(t / "noenc")),
         ("noenc", "not found"), category="models"),
    Case("synth: missing GGUF generator file", lambda t, m, b: _synth(t, None, "--model", str(t / "lm.gguf")),
         ("--model", "lm.gguf", "does not exist"), category="models"),
    Case("synth: .gguf file that is not GGUF", lambda t, m, b: _synth(
        t, None, "--model", str(_w(t / "lm.gguf", "PK a zip archive"))),
         ("--model", "lm.gguf", "not a GGUF file"), category="models"),
    Case("synth: truncated GGUF generator file", lambda t, m, b: _synth(
        t, None, "--model", str(_w(t / "lm.gguf", b"GGUF\x03\x00\x00\x00cut off"))),
         ("--model", "transformers cannot load lm.gguf"), category="models"),
    # ---- unsafe files
    Case("synth: pickle-only generator", lambda t, m, b: _synth(
        t, None, "--model", pickled_copy(t, _tiny_causal(t, b))),
         ("pytorch_model.bin", "pickle"), category="unsafe files"),
    # ---- outputs
    Case("synth: output is a folder", lambda t, m, b: (_w(t / "out" / "x", "x"), _crop(t))[1],
         ("--output", "is a folder"), output="out/none", category="outputs"),
    Case("synth: a stopped run's partial file without --resume", lambda t, m, b: (
        _partial(t, '{"embedkit_synth": 1}\n'), _crop(t))[1],
         ("out.partial", "--resume"), category="outputs"),
    Case("synth: resume of another format version's partial file", lambda t, m, b: _other_run_partial(t, version=1),
         ("out.partial", "another version of embedkit synth", "delete"), category="outputs"),
    Case("synth: resume with other settings", lambda t, m, b: _other_run_partial(t),
         ("out.partial", "other settings", "seed 1 -> 2"), category="outputs"),
    Case("synth: resume of a file that is no synth partial", lambda t, m, b: (
        _partial(t, '{"query": "q", "positive": "d"}\n'), _crop(t, "--resume"))[1],
         ("out.partial", "not an embedkit synth partial"), category="outputs"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)
