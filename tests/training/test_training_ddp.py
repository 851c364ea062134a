"""The whole trainer under ``torchrun`` (2 CPU processes, gloo): ``embedkit train`` end to end.

Two ranks with ``batch_size: 4`` each (cross-device negatives, GradCache, mined hard negatives, masking) must
train to the same weights as one process with ``batch_size: 8``: the sampler gives every rank its slice of one
global batch, embeddings are gathered with gradients, and DDP averages the per-rank means. Rank 0 alone mines,
saves checkpoints and writes the final folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from embedkit.training.checkpoint import is_complete


def _run(cmd: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore", EMBEDKIT_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.rglob("model.safetensors"))
    assert files, f"no weights under {folder}"
    return load_file(str(files[0]))


@pytest.mark.slow
def test_torchrun_two_ranks_train_like_one_process_with_the_full_batch(write_recipe, tiny_bert_nodrop: str,
                                                                        debian_pairs: str, tmp_path: Path) -> None:
    common = dict(
        model={"name": tiny_bert_nodrop, "max_seq_length": 32},
        data={"datasets": [{"path": debian_pairs, "name": "debian", "max_negatives": 1}]},
        miner={"num_negatives": 1, "range_max": 8, "max_score_ratio": None},
        losses={"infonce": {"temperature": 0.05, "masking": {"margin": 0.1}}},
        output={"save_steps": 2},
    )
    one = write_recipe("one.yaml", training={"batch_size": 8, "gradcache_chunk_size": 4, "max_steps": 3}, **common)
    two = write_recipe("two.yaml", training={"batch_size": 4, "gradcache_chunk_size": 2, "max_steps": 3}, **common)
    _run([sys.executable, "-m", "embedkit.cli", "train", str(one), "-o", str(tmp_path / "one")], tmp_path)
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
          "-m", "embedkit.cli", "train", str(two), "-o", str(tmp_path / "two")], tmp_path)

    a, b = _weights(tmp_path / "one" / "final"), _weights(tmp_path / "two" / "final")
    assert a.keys() == b.keys()
    start = _weights(Path(tiny_bert_nodrop))
    moved = max((a[k] - start[k]).abs().max().item() for k in a if k in start)
    assert moved > 1e-3, "training did not change the weights"
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-4, f"2-rank weights differ from the 1-process full batch by {diff}"

    info = json.loads((tmp_path / "two" / "final" / "embedkit_training.json").read_text())
    assert info["step"] == 3
    # rank 0 alone mined (the same negatives as one process) and wrote the same checkpoints, all complete
    assert (tmp_path / "two" / "mined" / "debian.jsonl").read_text() == \
        (tmp_path / "one" / "mined" / "debian.jsonl").read_text()
    ckpts = sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir())
    assert "checkpoint-2" in ckpts and ckpts == sorted(p.name for p in (tmp_path / "one" / "checkpoints").iterdir())
    assert all(is_complete(tmp_path / "two" / "checkpoints" / c) for c in ckpts)
