"""``eval/gpu_check.sh --dry-run``: the GPU check's CPU smoke run writes the JSON and markdown it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_every_field(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([str(REPO / "eval" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True and report["dtype"] == "bfloat16 autocast"
    assert set(report["versions"]) >= {"torch", "transformers", "sentence_transformers"}
    train = report["train"]
    # both models x (plain, gradcache), sdpa at least
    assert {(r["model"], r["mode"]) for r in train} == {(m, k) for m in ("minilm", "smollm2-bidir-lora")
                                                         for k in ("plain", "gradcache")}
    for r in train:
        assert {"model", "attn", "mode", "batch", "chunk", "step_s", "tokens_per_s", "peak_mem_gb", "mfu",
                "params", "lora"} <= set(r)
        assert r["step_s"] > 0 and r["tokens_per_s"] > 0 and r["params"] > 0
        assert r["peak_mem_gb"] is None and r["mfu"] is None  # CPU: no GPU memory counter, no peak FLOP/s
        assert (r["chunk"] is None) == (r["mode"] == "plain")
        assert r["lora"] == (r["model"] == "smollm2-bidir-lora")
    gc = {r["model"]: r for r in train if r["mode"] == "gradcache"}
    plain = {r["model"]: r for r in train if r["mode"] == "plain"}
    assert all(gc[m]["batch"] > plain[m]["batch"] >= gc[m]["chunk"] for m in gc)
    enc = report["encode"]
    assert {r["model"] for r in enc} == {"minilm", "smollm2-bidir-lora"}
    for r in enc:
        assert r["embedkit_texts_per_s"] > 0 and r["st_texts_per_s"] > 0
        assert abs(r["speedup"] - r["embedkit_texts_per_s"] / r["st_texts_per_s"]) < 0.01
    md = (tmp_path / "gpu_check.md").read_text()
    assert "DRY RUN" in md and md.count("| minilm |") == 3 and "tokens_per_s" in md and "speedup" in md


def test_gpu_check_without_a_gpu_and_without_dry_run_says_so(tmp_path: Path) -> None:
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run([str(REPO / "eval" / "gpu_check.sh"), "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "no CUDA device" in proc.stderr and "--dry-run" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
