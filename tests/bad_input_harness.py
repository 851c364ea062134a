"""Shared harness of the bad-input catalogue (``tests/test_bad_inputs*.py``).

A :class:`Case` builds its inputs in a fresh folder and returns the ``embedkit`` argv; :func:`check_case` runs it
in-process (the same ``main`` the console script runs) and checks: exit code 2, exactly one non-empty stderr line
starting ``embedkit: error:``, the expected fragments (what and where), a ``fix:`` hint, no traceback, and no output
file, folder or temporary file left behind. Every catalogue file exports a ``CASES`` list;
``tests/test_bad_inputs.py`` counts them all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedkit.cli import main

RECIPE = """\
model:
  name: {model}
  max_seq_length: 32
data:
  datasets:
    - path: {pairs}
      max_negatives: 0
training:
  batch_size: 2
  max_steps: 1
"""


@dataclass
class Case:
    name: str
    setup: Callable[[Path, str, str], list[str]]  # (tmp, minilm, tiny_bert) -> argv
    expect: tuple[str, ...]  # fragments of the one-line message
    output: str = "out"  # the output path (relative to tmp) that must not exist afterwards
    category: str = "inputs"  # one of CATEGORIES; docs/reliability.md lists the catalogue by it


#: the catalogue's categories, as docs/reliability.md groups them
CATEGORIES = ("inputs", "recipes", "models", "outputs", "interrupts", "unsafe files")


def _w(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


def _pairs(tmp: Path, body: str, name: str = "pairs.jsonl") -> str:
    return str(_w(tmp / name, body))


def _good_pairs(tmp: Path) -> str:
    rows = [{"query": f"query number {i}", "positive": f"document number {i} text"} for i in range(8)]
    return _pairs(tmp, "\n".join(json.dumps(r) for r in rows) + "\n", "good.jsonl")


def _recipe(tmp: Path, model: str, pairs: str, extra: str = "") -> str:
    return str(_w(tmp / "recipe.yaml", RECIPE.format(model=model, pairs=pairs) + extra))


def _beir(tmp: Path, *, corpus: str | None = None, queries: str | None = None, qrels: str | None = None,
          split: str = "test") -> str:
    root = tmp / "beir"
    root.mkdir()
    if corpus is not None:
        _w(root / "corpus.jsonl", corpus)
    if queries is not None:
        _w(root / "queries.jsonl", queries)
    if qrels is not None:
        _w(root / "qrels" / f"{split}.tsv", qrels)
    return str(root)


GOOD_CORPUS = '{"_id": "d1", "text": "list directory contents"}\n{"_id": "d2", "text": "copy files"}\n'
GOOD_QUERIES = '{"_id": "q1", "text": "ls"}\n'
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"


def _mine(tmp: Path, m: str, pairs: str, *extra: str) -> list[str]:
    return ["mine", "--pairs", pairs, "--model", m, "-o", str(tmp / "out"), *extra]


def _encode(tmp: Path, m: str, src: str, *extra: str) -> list[str]:
    return ["encode", "--model", m, "-i", src, "-o", str(tmp / "out.npy"), *extra]


def _bad_soup_member(tmp: Path, tiny: str) -> str:
    """A copy of the tiny BERT whose hidden size differs (same parameter names, other shapes)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp / "other"
    tok = AutoTokenizer.from_pretrained(tiny)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=128)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _gpt2(tmp: Path, tiny: str) -> str:
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    out = tmp / "gpt2"
    tok = AutoTokenizer.from_pretrained(tiny)
    GPT2Model(GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=1, n_head=2, bos_token_id=tok.cls_token_id,
                         eos_token_id=tok.sep_token_id)).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def check_case(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    """Run one catalogue case in-process and assert the promise: exit 2, one actionable line, nothing left behind."""
    argv = case.setup(tmp_path, minilm_path, tiny_bert)
    capsys.readouterr()  # drop whatever building the inputs printed
    before = set(tmp_path.rglob("*"))
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"exit {code}, stderr: {err}"
    assert len(lines) == 1, f"expected one line, got: {err}"
    line = lines[0]
    assert line.startswith("embedkit: error:") and "Traceback" not in err
    for fragment in case.expect:
        assert fragment.lower() in line.lower(), f"{fragment!r} not in {line!r}"
    assert "fix:" in line, f"no fix hint in {line!r}"
    assert not (tmp_path / case.output).exists(), "partial output left behind"
    new = {p for p in set(tmp_path.rglob("*")) - before if p.name.endswith(".tmp") or ".tmp" in p.name
           or p.name.startswith(".") and "partial" in p.name}
    assert not new, f"temporary files left behind: {new}"


def legacy_st_folder(t: Path, tiny: str, *, name: str = "pytorch_model.bin", payload: bytes | None = None) -> str:
    """An old-layout sentence-transformers folder whose Transformer weights exist only as a pickle."""
    import torch
    from safetensors.torch import load_file

    out = t / "legacy"
    tdir = out / "0_Transformer"
    shutil.copytree(tiny, tdir)
    state = load_file(tdir / "model.safetensors")
    (tdir / "model.safetensors").unlink()
    if payload is None:
        torch.save(state, tdir / name)
    else:
        (tdir / name).write_bytes(payload)
    _w(out / "1_Pooling" / "config.json", json.dumps({"word_embedding_dimension": 32,
                                                        "pooling_mode_mean_tokens": True}))
    _w(out / "modules.json", json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    return str(out)


def pickled_copy(tmp: Path, folder: str) -> str:
    """``folder`` with its safetensors weights replaced by a (harmless) pickle file, as legacy checkpoints have."""
    out = tmp / ("pickled-" + Path(folder).name)
    shutil.copytree(folder, out)
    for f in out.rglob("*.safetensors"):
        f.unlink()
    (out / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    return str(out)
