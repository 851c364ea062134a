"""Safe loading: no unpickling, trust_remote_code only on request (and recorded), YAML without Python objects."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedkit.errors import EmbedkitError, ModelError
from embedkit.models import load_model


def _folder_with_custom_module(tmp_path: Path, tiny_bert: str) -> Path:
    """A sentence-transformers folder whose modules.json points at code shipped inside the folder."""
    model = load_model(tiny_bert)
    out = tmp_path / "custom"
    model.save(str(out))
    marker = tmp_path / "code_ran"
    (out / "evil_module.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "from sentence_transformers.base.modules import Normalize as Evil\n"
    )
    modules = json.loads((out / "modules.json").read_text())
    modules[-1]["type"] = "evil_module.Evil"
    (out / "modules.json").write_text(json.dumps(modules))
    return out


def test_remote_code_is_refused_without_the_flag(tmp_path, tiny_bert):
    folder = _folder_with_custom_module(tmp_path, tiny_bert)
    with pytest.raises(ModelError) as err:
        load_model(str(folder))
    assert "trust_remote_code" in str(err.value) or "custom code" in str(err.value)
    assert not (tmp_path / "code_ran").exists(), "the folder's code must not run without the flag"


def test_pickle_weights_are_never_loaded(tmp_path, tiny_bert):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_bert, folder)
    for f in folder.glob("*.safetensors"):
        f.unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04\x95 not a real pickle")
    with pytest.raises(ModelError, match="safetensors only"):
        load_model(str(folder))


def test_yaml_python_tags_are_rejected(tmp_path):
    from embedkit.training.config import load_recipe

    marker = tmp_path / "yaml_code_ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(EmbedkitError) as err:
        load_recipe(recipe)
    assert "evil.yaml" in str(err.value)
    assert not marker.exists()


def test_model_card_records_trust_remote_code_flag():
    from embedkit.training.model_card import render_card

    on = render_card(recipe_yaml="model: {name: x}\n", data_stats=[], metrics={}, step=1, trust_remote_code=True)
    off = render_card(recipe_yaml="model: {name: x}\n", data_stats=[], metrics={}, step=1, trust_remote_code=False)
    assert "`trust_remote_code` needed to load: **yes**" in on
    assert "`trust_remote_code` needed to load: **no**" in off


# ---- pickle weights: refused per module folder, before anything is loaded (issue 27, item 7)


class _Evil:
    """Unpickling this runs code (os.system): what a malicious pytorch_model.bin does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _legacy_st_folder(tmp_path: Path, tiny_bert: str, *, weights: bytes | None = None, name: str = "pytorch_model.bin"
                      ) -> Path:
    """A sentence-transformers folder in the old layout: 0_Transformer/ (weights only as a pickle) + 1_Pooling/."""
    from bad_input_harness import legacy_st_folder

    return Path(legacy_st_folder(tmp_path, tiny_bert, name=name, payload=weights))


@pytest.fixture
def no_torch_load(monkeypatch):
    """Fail the test if anything calls torch.load."""
    import torch

    calls: list[object] = []

    def refuse(*args, **kwargs):
        calls.append(args[0] if args else kwargs)
        raise AssertionError(f"torch.load called on {args[0] if args else kwargs}")

    monkeypatch.setattr(torch, "load", refuse)
    return calls


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.pth", "model.ckpt"])
def test_legacy_layout_pickle_is_refused_before_loading(tmp_path, tiny_bert, no_torch_load, name):
    folder = _legacy_st_folder(tmp_path, tiny_bert, name=name)
    with pytest.raises(ModelError) as err:
        load_model(str(folder))
    msg = str(err.value)
    assert f"0_Transformer/{name}" in msg and "safetensors only" in msg and "\n" not in msg
    assert "save_file(" in msg and "weights_only=True" in msg  # the conversion command
    assert not no_torch_load


def test_top_level_pickle_with_unrelated_safetensors_elsewhere_is_refused(tmp_path, tiny_bert, no_torch_load):
    import torch
    from safetensors.torch import load_file

    folder = Path(shutil.copytree(tiny_bert, tmp_path / "mixed"))
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").rename(tmp_path / "moved.safetensors")
    (folder / "extra").mkdir()
    (tmp_path / "moved.safetensors").rename(folder / "extra" / "other.safetensors")
    with pytest.raises(ModelError, match="pytorch_model.bin holds pickle weights"):
        load_model(str(folder))
    assert not no_torch_load


def test_malicious_pickle_is_one_line_and_never_runs(tmp_path, tiny_bert, capsys):
    import pickle

    marker = tmp_path / "pickle_code_ran"
    folder = _legacy_st_folder(tmp_path, tiny_bert, weights=pickle.dumps({"w": _Evil(marker)}))
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "hello"}\n')
    from embedkit.cli import main

    capsys.readouterr()
    code = main(["encode", "--model", str(folder), "-i", str(src), "-o", str(tmp_path / "o.npy")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "0_Transformer/pytorch_model.bin" in lines[0] and "never unpickles" in lines[0]
    assert "UnpicklingError" not in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "o.npy").exists()


def test_pickle_beside_safetensors_is_never_read(tmp_path, tiny_bert, no_torch_load):
    """A .bin next to model.safetensors (e.g. an old copy) is left alone: weights load from safetensors only."""
    folder = Path(shutil.copytree(tiny_bert, tmp_path / "both"))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not a real pickle")
    model = load_model(str(folder))
    assert model.encode(["hello"]).shape == (1, 32)
    assert not no_torch_load


def test_soup_uses_the_same_pickle_check(tmp_path, tiny_bert, capsys):
    from embedkit.cli import main

    folder = _legacy_st_folder(tmp_path, tiny_bert)
    capsys.readouterr()
    code = main(["soup", str(folder), str(folder), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "0_Transformer/pytorch_model.bin" in err and "safetensors only" in err
    assert not (tmp_path / "out").exists()


def test_no_torch_load_in_embedkit_sources():
    """embedkit never calls torch.load itself (checkpoint resume goes through HF Trainer, weights_only=True)."""
    import ast

    import embedkit

    root = Path(embedkit.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and func.attr == "load" and getattr(func.value, "id", "") == "torch":
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
