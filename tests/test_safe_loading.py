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
