"""Fixtures for the trainer tests: a small real pairs file and a recipe writer for tiny models."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture(scope="session")
def debian_pairs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The first 48 real Debian (synopsis -> description) pairs of the packaged sample, as a JSONL file."""
    from embedkit.data.samples import sample_path

    out = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(48)]
    out.write_text("".join(lines), encoding="utf-8")
    return str(out)


@pytest.fixture(scope="session")
def tiny_bert_nodrop(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """``tiny_bert`` without dropout (so differently chunked computations are comparable)."""
    import shutil

    out = tmp_path_factory.mktemp("tiny_bert_nodrop")
    shutil.copytree(tiny_bert, out, dirs_exist_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg["hidden_dropout_prob"] = 0.0
    cfg["attention_probs_dropout_prob"] = 0.0
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


@pytest.fixture
def write_recipe(tmp_path: Path, tiny_bert: str, debian_pairs: str) -> Callable[..., Path]:
    """``write_recipe(**sections)`` -> path of a small recipe (tiny BERT, 48 real pairs) with overrides merged in."""

    def _write(name: str = "recipe.yaml", **over: Any) -> Path:
        recipe: dict[str, Any] = {
            "model": {"name": tiny_bert, "max_seq_length": 32},
            "data": {"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 0}]},
            "training": {"batch_size": 8, "max_steps": 4, "lr": 1.0e-3, "logging_steps": 100, "seed": 7},
            "output": {"save_steps": 2},
        }
        for section, values in over.items():
            if isinstance(values, dict) and isinstance(recipe.get(section), dict):
                recipe[section].update(values)
            else:
                recipe[section] = values
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
        return path

    return _write
