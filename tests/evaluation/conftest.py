"""Fixtures of the evaluation tests: a small real BEIR folder (a seeded slice of the man-pages sample), an STS
file, and a second tiny BERT (different random weights) so that two checkpoints really differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def small_beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 queries / 80 documents of the committed man-pages sample, as a BEIR folder."""
    from embedkit.data.beir import load_beir, write_beir
    from embedkit.evaluation.samples import manpages_path

    out = tmp_path_factory.mktemp("beir") / "mp_small"
    write_beir(load_beir(manpages_path()).subset(max_queries=40, max_corpus=80, seed=1), out)
    return out


STS_ROWS = [
    ("a cat sits on the mat", "a cat is sitting on a mat", 4.8),
    ("a dog runs in the park", "a man is cooking pasta", 0.2),
    ("copy files to a folder", "duplicate files into a directory", 4.0),
    ("list the directory", "show the contents of a folder", 3.9),
    ("open a file for reading", "close the front door", 1.0),
    ("print text to the terminal", "write output to the screen", 3.1),
    ("the stock market fell", "a child plays the violin", 0.0),
    ("remove a file", "delete a file", 4.9),
]


@pytest.fixture(scope="session")
def sts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sts") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in STS_ROWS))
    return path


@pytest.fixture(scope="session")
def tiny_bert_b(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> str:
    """Like conftest's ``tiny_bert`` but with other random weights (seed 1)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_bert_b")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(1)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
