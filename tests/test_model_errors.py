"""Model loading errors are one clear line."""

from __future__ import annotations

import json

import pytest

from embedkit.cli import main
from embedkit.errors import ModelError
from embedkit.models import load_model


def test_missing_model_path(tmp_path):
    with pytest.raises(ModelError) as err:
        load_model(str(tmp_path / "nope"))
    msg = str(err.value)
    assert "not found" in msg and "minilm" in msg and "\n" not in msg


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(str(tmp_path))


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        load_model(str(tmp_path))


def test_pickle_only_weights_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(ModelError, match="safetensors only"):
        load_model(str(tmp_path))


def test_cli_missing_model_exit_2(tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("hello\n")
    code = main(["encode", "--model", str(tmp_path / "missing"), "-i", str(src), "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]
    assert not (tmp_path / "o.npy").exists()
