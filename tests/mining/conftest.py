"""Fixtures for the miner tests: a tiny sentence-transformers model, controlled embeddings, real Debian pairs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_st(tiny_bert: str):
    """The 2-layer random BERT as an embedkit SentenceTransformer (mean pooling + normalise)."""
    from embedkit import load_model

    return load_model(tiny_bert)


def score_vector(score: float, dim: int = 3) -> np.ndarray:
    """A unit vector whose inner product with the query vector e0 is exactly ``score``."""
    v = np.zeros(dim, dtype=np.float32)
    v[0] = score
    v[1] = np.sqrt(max(0.0, 1 - score * score))
    return v


class TableEncoder:
    """An ``encode_fn`` that returns hand-chosen vectors (queries map to e0) and counts its calls."""

    def __init__(self, scores: dict[str, float], queries: set[str]) -> None:
        self.scores = scores
        self.queries = queries
        self.calls = 0
        self.texts = 0

    def __call__(self, model, texts, *, prompt=None, batch_size=32, show_progress_bar=None) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        out = []
        for t in texts:
            if t in self.queries:
                v = np.zeros(3, dtype=np.float32)
                v[0] = 1
                out.append(v)
            else:
                out.append(score_vector(self.scores[t]))
        return np.stack(out)


@pytest.fixture
def table_encoder() -> Callable[[dict[str, float], set[str]], TableEncoder]:
    return TableEncoder


@pytest.fixture(scope="session")
def debian_pairs():
    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import sample_path

    return list(load_pairs(sample_path("debian-train")))


def _mine_one_and_two(common: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``embedkit mine *common`` in one process (``one.jsonl``, cache ``c1``) and on 2 torchrun ranks (``two.jsonl``,
    cache ``c2``); both must exit 0. Returns the two finished processes (their stderr holds the summaries)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launchers = {"one": [sys.executable, "-m", "embedkit.cli"],
                 "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "--module", "embedkit.cli"]}
    done = []
    for i, (name, launcher) in enumerate(launchers.items(), start=1):
        proc = subprocess.run([*launcher, *common, "-o", str(tmp_path / f"{name}.jsonl"),
                               "--cache-dir", str(tmp_path / f"c{i}")], env=env, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        done.append(proc)
    return done[0], done[1]


@pytest.fixture
def mine_one_and_two():
    """Run one ``embedkit mine`` command in one process and under 2-rank torchrun (see :func:`_mine_one_and_two`)."""
    return _mine_one_and_two
