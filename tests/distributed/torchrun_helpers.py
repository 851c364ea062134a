"""Shared by the 2-process ``torchrun`` tests of this folder: launch a worker script, a tiny BERT without dropout,
and the embeddings of a saved folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch


def run_worker(script: Path, model: str, out: Path, *extra: str, timeout: int = 300, tail: int = 3000) -> dict:
    """Run ``script`` on 2 gloo ranks (``--model``, ``--out`` + ``extra``); its ``OUT/result.json``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "--model", model, "--out", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-tail:]
    return json.loads((out / "result.json").read_text())


def copy_without_dropout(model: str, out: Path) -> str:
    """A copy of the BERT folder ``model`` with dropout off (ranks and reloads then compare exactly)."""
    shutil.copytree(model, out, dirs_exist_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(cfg))
    return str(out)


def encode_folder(folder: Path, texts: list[str], *, plain: bool) -> torch.Tensor:
    """``texts`` embedded by the saved ``folder``: with plain ``SentenceTransformer`` or ``embedkit.load_model``."""
    if plain:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(folder), device="cpu")
    else:
        from embedkit.models import load_model

        model = load_model(str(folder))
    model.eval()
    return model.encode(texts, convert_to_tensor=True, batch_size=8).cpu()
