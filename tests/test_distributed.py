"""Cross-device negatives and one all-reduce per step: a real 2-process torchrun (gloo, CPU) run, with
sentence-transformers' own ``CachedMultipleNegativesRankingLoss`` on the same chunks for comparison.

The worker script is ``tests/distributed/ddp_gradcache.py``; it writes one JSON per rank that is checked here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from embedkit.losses import make_batch
from embedkit.training.distributed import gather_batch, gather_no_grad, gather_with_grad, is_distributed, rank, world_size

SCRIPT = Path(__file__).parent / "distributed" / "ddp_gradcache.py"
TOL = 1e-5


def test_helpers_are_no_ops_on_one_process() -> None:
    assert (is_distributed(), rank(), world_size()) == (False, 0, 1)
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x and gather_no_grad(x) is x
    batch = make_batch(torch.randn(2, 4), torch.randn(4, 4), 2)
    assert gather_batch(batch) is batch and batch.rows == slice(0, 2)


@pytest.fixture(scope="module")
def torchrun_results(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), "--model", tiny_bert, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.slow
def test_gathered_negatives_equal_single_process_full_batch(torchrun_results: list[dict]) -> None:
    for res in torchrun_results:
        assert res["ref_grad_max"] > 0.1
        # DDP + GradCache + cross-device negatives (5 and 3 rows, ragged negatives) == one process, 8 rows
        assert res["gather_diff"] <= TOL
        # contrasts: each rank on its own rows, or a plain (detached) all_gather, give different gradients
        assert res["local_diff"] > 1e-2
        assert res["detached_diff"] > 1e-2
        assert res["mixed_negatives"] > 0
    # the planted duplicate (row 2's positive == row 0's positive, both on rank 0) is masked in both directions
    assert [r["masked_false_negatives"] for r in torchrun_results] == [2.0, 0.0]


@pytest.mark.slow
def test_one_gradient_allreduce_per_step_with_gradcache(torchrun_results: list[dict]) -> None:
    for res in torchrun_results:
        calls = res["allreduce_calls"]
        assert calls["plain"] >= 1  # buckets of one ordinary DDP backward
        assert calls["gradcache_no_sync"] == calls["plain"]  # one sync round for 6 chunks
        assert calls["gradcache_unequal_split"] == calls["plain"]  # ranks with different chunk counts too
        assert calls["chunks"] == 6
        # the contrast: embedkit's own GradCache called WITHOUT no_sync syncs after every chunk's backward, so
        # no_sync is what saves the rounds (this is embedkit's code, not a model of any other library)
        assert calls["embedkit_gradcache_no_sync_off"] == calls["chunks"] * calls["plain"]
        # same gradients either way, and the same as the plain DDP step
        assert res["no_sync_vs_sync_diff"] <= TOL
        assert res["no_sync_vs_plain_diff"] <= TOL


@pytest.mark.slow
def test_sentence_transformers_cached_mnrl_also_syncs_once_per_step(torchrun_results: list[dict]) -> None:
    """The real ``CachedMultipleNegativesRankingLoss`` of the installed sentence-transformers (6.2), DDP-wrapped the
    way its trainer does it, on the same 6 chunks: it replays every chunk but the last inside ``no_sync``
    (``sentence_transformers/base/losses/gradcache.py``, ``_ddp_replay_context``), so it also syncs once per step,
    and its gradient equals embedkit's GradCache's with the same InfoNCE (temperature 0.05 = scale 20)."""
    for res in torchrun_results:
        calls = res["allreduce_calls"]
        assert calls["st_cached_mnrl_chunks"] == calls["chunks"]
        assert calls["st_cached_mnrl"] == calls["plain"]
        assert res["st_grad_max"] > 1e-3
        assert res["st_vs_embedkit_diff"] <= TOL
