"""Bad-input catalogue: model folders (weights that do not fit their config, soups of different architectures,
LoRA adapters that cannot be applied) and unsafe files (pickle weights, in every layout and suffix).

Each case: exit 2, one line naming what and where, a fix, no traceback, nothing left behind (the harness checks
it: tests/bad_input_harness.py). Unsafe files are refused *before* anything is loaded, so no pickle reaches
``torch.load``; a malicious one never runs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from bad_input_harness import (
    GOOD_CORPUS, GOOD_QRELS, GOOD_QUERIES, Case, _beir, _encode, _mine, _pairs, _w, check_case, legacy_st_folder,
)


class _Evil:
    """Unpickling this runs a shell command: what a malicious pytorch_model.bin does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _texts(t: Path) -> str:
    return _pairs(t, '{"text": "list files"}\n', "t.jsonl")


def _eval_beir(t: Path) -> str:
    return _beir(t, corpus=GOOD_CORPUS, queries=GOOD_QUERIES, qrels=GOOD_QRELS)


def _pickle_only(t: Path, tiny: str, suffix: str) -> str:
    """A plain transformers folder whose only weights file is a pickle with ``suffix``."""
    import torch
    from safetensors.torch import load_file

    out = Path(shutil.copytree(tiny, t / f"weights{suffix.replace('.', '_')}"))
    torch.save(load_file(out / "model.safetensors"), out / f"model{suffix}")
    (out / "model.safetensors").unlink()
    return str(out)


def _top_bin_with_unrelated_safetensors(t: Path, tiny: str) -> str:
    import torch
    from safetensors.torch import load_file

    out = Path(shutil.copytree(tiny, t / "mixed"))
    torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
    (out / "extra").mkdir()
    (out / "model.safetensors").rename(out / "extra" / "unrelated.safetensors")
    return str(out)


def _edited_config(t: Path, tiny: str, name: str = "edited", **changes: object) -> str:
    out = Path(shutil.copytree(tiny, t / name))
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


def _adapter_config(base: str) -> str:
    return json.dumps({"peft_type": "LORA", "base_model_name_or_path": base, "r": 4, "lora_alpha": 8,
                       "target_modules": ["query", "value"]})


def _bare_adapter(t: Path, base: str) -> str:
    out = t / "adapter_only"
    _w(out / "adapter_config.json", _adapter_config(base))
    _w(out / "adapter_model.safetensors", b"")  # never read: the missing base is refused first
    return str(out)


def _run_with_adapter(t: Path, tiny: str, config_text: str, weights: tuple[str, bytes] | None = None) -> str:
    """A run saved like ``merge_on_save: false``: the base model plus ``adapter/``."""
    out = Path(shutil.copytree(tiny, t / "lora_run"))
    _w(out / "adapter" / "adapter_config.json", config_text)
    if weights is not None:
        _w(out / "adapter" / weights[0], weights[1])
    return str(out)


CASES: list[Case] = [
    # ---- unsafe files: pickle weights without a safetensors counterpart in their module folder
    Case("encode: model whose 0_Transformer weights are only pytorch_model.bin (legacy layout)",
         lambda t, m, b: _encode(t, legacy_st_folder(t, b), _texts(t)),
         ("0_Transformer/pytorch_model.bin", "never unpickles", "save_file("), "out.npy", "unsafe files"),
    Case("encode: malicious pickle in the legacy layout never runs",
         lambda t, m, b: _encode(t, legacy_st_folder(t, b, payload=pickle.dumps({"w": _Evil(str(t / "pwned"))})), _texts(t)),
         ("0_Transformer/pytorch_model.bin", "never unpickles"), "pwned", "unsafe files"),
    Case("encode: top-level pytorch_model.bin with an unrelated .safetensors in a sub-folder",
         lambda t, m, b: _encode(t, _top_bin_with_unrelated_safetensors(t, b), _texts(t)),
         ("pytorch_model.bin holds pickle weights", "mixed"), "out.npy", "unsafe files"),
    Case("encode: model weights only as a .pth file",
         lambda t, m, b: _encode(t, _pickle_only(t, b, ".pth"), _texts(t)),
         ("model.pth", "safetensors only"), "out.npy", "unsafe files"),
    Case("eval: checkpoint weights only as a .pt file",
         lambda t, m, b: ["eval", _pickle_only(t, b, ".pt"), "--beir", _eval_beir(t), "-o", str(t / "out")],
         ("model.pt", "safetensors only"), "out", "unsafe files"),
    Case("mine: model weights only as a .ckpt file",
         lambda t, m, b: _mine(t, _pickle_only(t, b, ".ckpt"), _pairs(t, '{"query": "q", "positive": "d"}\n')),
         ("model.ckpt", "safetensors only"), "out", "unsafe files"),
    Case("soup: member in the legacy layout with pickle-only Transformer weights",
         lambda t, m, b: ["soup", b, legacy_st_folder(t, b), "-o", str(t / "out")],
         ("0_Transformer/pytorch_model.bin", "never unpickles"), "out", "unsafe files"),
    Case("soup: run whose adapter/ holds only adapter_model.bin",
         lambda t, m, b: ["soup", _run_with_adapter(t, b, _adapter_config(b), ("adapter_model.bin", b"\x80\x04x")),
                          b, "-o", str(t / "out")],
         ("adapter/adapter_model.bin", "never unpickles"), "out", "unsafe files"),
    # ---- models: weights that do not fit config.json
    Case("encode: model weights do not match its config.json hidden_size",
         lambda t, m, b: _encode(t, _edited_config(t, b, hidden_size=16, num_attention_heads=2), _texts(t)),
         ("do not match config.json", "hidden_size 16", "model.safetensors"), "out.npy", "models"),
    Case("eval: checkpoint weights do not match its config.json intermediate_size",
         lambda t, m, b: ["eval", _edited_config(t, b, intermediate_size=48), "--beir", _eval_beir(t),
                          "-o", str(t / "out")],
         ("do not match config.json", "intermediate_size 48"), "out", "models"),
    # ---- models: soups of different architectures (shape-determining config keys)
    Case("soup: member config with another hidden_size names key and both values",
         lambda t, m, b: ["soup", b, _edited_config(t, b, hidden_size=16), "-o", str(t / "out")],
         ("'hidden_size' is 16", "not 32", "edited"), "out", "models"),
    Case("soup: member config with another num_hidden_layers",
         lambda t, m, b: ["soup", b, _edited_config(t, b, num_hidden_layers=3), "-o", str(t / "out")],
         ("'num_hidden_layers' is 3", "not 2"), "out", "models"),
    Case("soup: member config with another num_attention_heads",
         lambda t, m, b: ["soup", b, _edited_config(t, b, num_attention_heads=2), "-o", str(t / "out")],
         ("'num_attention_heads' is 2", "not 4"), "out", "models"),
    # ---- models: LoRA adapters that cannot be applied
    Case("eval: LoRA adapter folder whose base model is missing",
         lambda t, m, b: ["eval", _bare_adapter(t, str(t / "gone_base")), "--beir", _eval_beir(t),
                          "-o", str(t / "out")],
         ("base model", "of LoRA adapter", "gone_base"), "out", "models"),
    Case("soup: LoRA adapter folder whose base model is missing",
         lambda t, m, b: ["soup", _bare_adapter(t, str(t / "gone_base")), "-o", str(t / "out")],
         ("base model", "gone_base", "base_model_name_or_path"), "out", "models"),
    Case("encode: run with a corrupt adapter/adapter_config.json",
         lambda t, m, b: _encode(t, _run_with_adapter(t, b, "{oops"), _texts(t)),
         ("adapter/adapter_config.json:1", "cannot read"), "out.npy", "models"),
    Case("encode: folder holding both a model and a top-level adapter_config.json",
         lambda t, m, b: _encode(t, str(_w(Path(shutil.copytree(b, t / "both")) / "adapter_config.json",
                                           _adapter_config(b)).parent), _texts(t)),
         ("both a model", "adapter_config.json"), "out.npy", "models"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, minilm_path: str, tiny_bert: str, capsys) -> None:
    check_case(case, tmp_path, minilm_path, tiny_bert, capsys)
