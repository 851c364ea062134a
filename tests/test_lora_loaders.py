"""A LoRA run saved with ``merge_on_save: false`` (base pipeline + ``adapter/``) loads as the *trained* model
through every loader: ``embedkit.load_model``, ``embedkit encode``, the eval runner and ``embedkit soup``.

Before, every loader silently used the untrained base, and soup averaged the adapter's A and B matrices
element-wise. One function (:func:`embedkit.models.lora.find_adapter`) recognises adapter folders.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from transformers import TrainerCallback

import embedkit
from embedkit.cli import main
from embedkit.errors import ModelError

TEXTS = ["list directory contents", "copy files and directories", "a text editor for the terminal"]


class _EmbedAtEnd(TrainerCallback):
    """Encode TEXTS with the in-memory trained model (adapter attached, not merged) when training ends."""

    def __init__(self) -> None:
        self.embeddings: np.ndarray | None = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        self.embeddings = embedkit.encode(model, TEXTS)
        model.train(was_training)
        return control


@pytest.fixture(scope="module")
def adapter_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> tuple[Path, np.ndarray]:
    """Train a tiny BERT with LoRA and ``merge_on_save: false``; return its final folder and the trained model's
    embeddings of TEXTS (taken in memory at the end of training)."""
    from embedkit.data.samples import sample_path
    from embedkit.training.config import load_recipe
    from embedkit.training.runner import run_recipe

    root = tmp_path_factory.mktemp("lora_run")
    with gzip.open(sample_path("debian-train"), "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(32)]
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(lines), encoding="utf-8")
    recipe = {
        "model": {"name": tiny_bert, "max_seq_length": 32,
                  "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "merge_on_save": False}},
        "data": {"datasets": [{"path": str(pairs), "name": "debian", "max_negatives": 0}]},
        "training": {"batch_size": 8, "max_steps": 3, "lr": 5.0e-2, "logging_steps": 100, "seed": 7},
        "output": {"save_steps": 100},
    }
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    cb = _EmbedAtEnd()
    res = run_recipe(load_recipe(path), root / "out", callbacks=[cb])
    assert (res.final_dir / "adapter" / "adapter_config.json").is_file()  # the layout this test is about
    assert cb.embeddings is not None
    return res.final_dir, cb.embeddings


def _assert_trained(got: np.ndarray, trained: np.ndarray, base: np.ndarray) -> None:
    assert np.abs(trained - base).max() > 1e-3, "training must have changed the model for this test to mean much"
    np.testing.assert_allclose(got, trained, atol=2e-5)


@pytest.fixture(scope="module")
def base_embeddings(tiny_bert: str) -> np.ndarray:
    return embedkit.encode(embedkit.load_model(tiny_bert), TEXTS)


def test_find_adapter_recognises_both_layouts(adapter_run, tiny_bert: str, tmp_path: Path) -> None:
    from embedkit.models.lora import find_adapter

    final, _ = adapter_run
    inside = find_adapter(final)
    assert inside is not None and inside.embedded and inside.path == final / "adapter" and inside.base == str(final)
    bare = find_adapter(final / "adapter")
    assert bare is not None and not bare.embedded and Path(bare.base) == Path(tiny_bert).resolve()
    assert find_adapter(tiny_bert) is None
    assert find_adapter(tmp_path) is None


def test_load_model_applies_the_saved_adapter(adapter_run, base_embeddings) -> None:
    final, trained = adapter_run
    model = embedkit.load_model(str(final))
    from embedkit.models.lora import has_lora

    assert not has_lora(model)  # merged: a plain model
    _assert_trained(embedkit.encode(model, TEXTS), trained, base_embeddings)


def test_cli_encode_uses_the_trained_model(adapter_run, base_embeddings, tmp_path: Path, capsys) -> None:
    final, trained = adapter_run
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS), encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert main(["encode", "--model", str(final), "-i", str(src), "-o", str(out)]) == 0, capsys.readouterr().err
    _assert_trained(np.load(out), trained, base_embeddings)


def test_eval_runner_loads_the_trained_model(adapter_run, base_embeddings) -> None:
    from embedkit.evaluation.runner import load_checkpoint

    final, trained = adapter_run
    _assert_trained(embedkit.encode(load_checkpoint(final), TEXTS), trained, base_embeddings)
    # the bare adapter folder loads on its base too (base_model_name_or_path = the tiny BERT): without the
    # pipeline's own modules it is the same model here, since only the backbone trained
    _assert_trained(embedkit.encode(load_checkpoint(final / "adapter"), TEXTS), trained, base_embeddings)


def test_soup_of_the_run_with_itself_is_the_trained_model(adapter_run, base_embeddings, tmp_path: Path) -> None:
    from safetensors import safe_open

    from embedkit.soup import soup

    final, trained = adapter_run
    res = soup([final, final], output=tmp_path / "soup")
    assert [m.kind for m in res.members] == ["lora", "lora"]
    assert not (tmp_path / "soup" / "adapter").exists()  # the adapter was merged, not copied or averaged
    with safe_open(str(tmp_path / "soup" / "model.safetensors"), framework="pt") as f:
        assert not any("lora_" in k for k in f.keys())
    _assert_trained(embedkit.encode(embedkit.load_model(str(tmp_path / "soup")), TEXTS), trained, base_embeddings)


def test_corrupt_adapter_config_is_one_line(adapter_run, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(adapter_run[0], tmp_path / "run"))
    (folder / "adapter" / "adapter_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(ModelError) as err:
        embedkit.load_model(str(folder))
    assert "adapter_config.json" in str(err.value) and "\n" not in str(err.value)
