"""Run by ``tests/test_distributed.py`` under ``torchrun --nproc_per_node 2`` (gloo, CPU).

Each rank writes ``<out>/rank<r>.json`` with:

* ``gather_diff``: max |grad| difference between DDP + GradCache + cross-device negatives (ranks holding 5 and 3
  rows, ragged hard negatives) and one process computing the same loss on all 8 rows;
* ``local_diff`` / ``detached_diff``: the same without gathering, and with a plain (detached) ``dist.all_gather``
  -- both must be wrong (contrast);
* ``allreduce_calls``: gradient all-reduce hook calls per step for a plain DDP step, embedkit's GradCache with
  ``no_sync`` and (as a contrast) without it, sentence-transformers' real ``CachedMultipleNegativesRankingLoss`` on
  the same chunks, plus the chunk counts;
* ``st_vs_embedkit_diff``: max |grad| difference between that CachedMNRL step and embedkit's GradCache with the same
  InfoNCE (temperature 0.05 = scale 20) on the same rows.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import types
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from embedkit.losses import (
    CombinedLoss,
    InfoNCELoss,
    FalseNegativeMasking,
    HardNegativeMixing,
    ListwiseDistillationLoss,
    hash_texts,
    make_batch,
)
from embedkit.models import load_model
from embedkit.training import distributed as edist
from embedkit.training.gradcache import GradCache, compute_loss_uncached

WORDS = ["copy", "move", "list", "delete", "compress", "find", "mount", "print"]


def rows(n_rows: int, counts: list[int]) -> tuple[list[str], list[str], list[int]]:
    queries = [f"how to {WORDS[i]} things on a system" for i in range(n_rows)]
    docs: list[str] = []
    for i, c in enumerate(counts):
        docs += [f"{WORDS[i]} manual page" if j == 0 else f"{WORDS[(i + j) % 8]} negative {j}" for j in range(c)]
    docs[5] = docs[0].upper()  # a text duplicate of row 0's positive (hash masking across ranks)
    return queries, docs, counts


def loss_fn() -> CombinedLoss:
    return CombinedLoss({
        "infonce": (InfoNCELoss(temperature=0.05, symmetric=True,
                                mixing=HardNegativeMixing(num_mixed=3, hardest_k=4, mix_query=True, seed=5),
                                masking=FalseNegativeMasking(margin=None, mask_duplicates=True)), 1.0),
        "kd": (ListwiseDistillationLoss(temperature=0.05), 0.5),
    })


def builder(docs: list[str], counts: list[int], offset: int = 0):
    """``offset``: global index of ``docs[0]`` (teacher scores are a function of the global document index)."""
    teacher = torch.tensor([float((7 * (i + offset)) % 5) for i in range(len(docs))])
    hashes = hash_texts(docs)

    def build(q: torch.Tensor, d: torch.Tensor):
        return make_batch(q, d, counts, doc_hash=hashes, teacher_scores=teacher)

    return build


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n.removeprefix("module."): p.grad.detach().clone()
            for n, p in model.named_parameters() if p.grad is not None}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b) and a, (sorted(a)[:3], sorted(b)[:3])
    return max((a[k] - b[k]).abs().max().item() for k in a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dist.init_process_group("gloo")
    try:
        run(args)
    finally:
        dist.destroy_process_group()


def run(args: argparse.Namespace) -> None:
    r, world = dist.get_rank(), dist.get_world_size()
    assert world == 2 and edist.is_distributed() and edist.rank() == r
    torch.manual_seed(0)
    base = load_model(args.model)
    for n, p in base.named_parameters():
        if ".pooler." in n:  # BERT's pooler is not part of the embedding: freeze it so DDP expects no grad there
            p.requires_grad_(False)
    base.eval()  # no dropout: the reference is ONE process on the full batch
    ref_model = copy.deepcopy(base)
    st_base = copy.deepcopy(base)
    ddp = DDP(base)
    calls = {"n": 0}

    def counting_hook(state, bucket):
        state["n"] += 1
        return default_hooks.allreduce_hook(None, bucket)

    ddp.register_comm_hook(calls, counting_hook)
    result: dict[str, object] = {"rank": r}

    # ---- ragged, unequal split: rank 0 holds rows 0-4, rank 1 rows 5-7
    counts_all = [3, 2, 3, 1, 3, 2, 3, 2]
    queries, docs, _ = rows(8, counts_all)
    split = 5
    n_docs0 = sum(counts_all[:split])
    lo_q, hi_q = (0, split) if r == 0 else (split, 8)
    lo_d, hi_d = (0, n_docs0) if r == 0 else (n_docs0, len(docs))
    my_counts = counts_all[lo_q:hi_q]
    my_q, my_d = queries[lo_q:hi_q], docs[lo_d:hi_d]

    # reference: one process, all 8 rows
    ref_loss_fn = loss_fn()
    loss, _ = compute_loss_uncached(ref_model, ref_loss_fn, ref_model.preprocess(queries),
                                    ref_model.preprocess(docs), builder(docs, counts_all))
    loss.backward()
    g_ref = grads(ref_model)

    qf, df = base.preprocess(my_q), base.preprocess(my_d)
    build = builder(my_d, my_counts, offset=lo_d)

    def step(gather: bool, use_no_sync: bool = True) -> tuple[dict[str, torch.Tensor], int, dict[str, float]]:
        ddp.zero_grad(set_to_none=True)
        calls["n"] = 0
        gc = GradCache(ddp, loss_fn(), chunk_size=2, gather_across_devices=gather)
        _, stats = gc.forward_backward(qf, df, build, no_sync=ddp.no_sync if use_no_sync else None)
        return grads(ddp), calls["n"], stats

    g, n_gc_unequal, stats = step(gather=True)
    result["gather_diff"] = max_diff(g_ref, g)
    result["ref_grad_max"] = max(v.abs().max().item() for v in g_ref.values())
    result["masked_false_negatives"] = stats.get("masked_false_negatives")
    result["mixed_negatives"] = stats.get("mixed_negatives")
    g_local, _, _ = step(gather=False)
    result["local_diff"] = max_diff(g_ref, g_local)

    # the classic mistake: plain dist.all_gather keeps only the local part in the graph
    real = edist.gather_with_grad

    def detached_gather(t: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        sizes = sizes or [t.shape[0]] * world
        full = edist.gather_no_grad(t, sizes)
        start = sum(sizes[:r])
        return torch.cat([full[:start], t, full[start + t.shape[0]:]])

    edist.gather_with_grad = detached_gather
    try:
        g_det, _, _ = step(gather=True)
    finally:
        edist.gather_with_grad = real
    result["detached_diff"] = max_diff(g_ref, g_det)

    # ---- all-reduce counting on an equal split (4 rows x 2 docs per rank: same chunk count on both ranks)
    counts_eq = [2] * 4
    q_eq, d_eq, _ = rows(4, counts_eq)
    d_eq = [f"rank {r} {t}" for t in d_eq]
    qf, df, build = base.preprocess(q_eq), base.preprocess(d_eq), builder(d_eq, counts_eq)
    ddp.zero_grad(set_to_none=True)
    calls["n"] = 0
    plain_loss, _ = compute_loss_uncached(ddp, loss_fn(), qf, df, build, gather_across_devices=True)
    plain_loss.backward()
    n_plain = calls["n"]
    g_plain = grads(ddp)
    g_on, n_on, _ = step(gather=True, use_no_sync=True)
    g_off, n_off, _ = step(gather=True, use_no_sync=False)  # contrast: embedkit's GradCache without no_sync
    chunks = -(-4 // 2) + -(-8 // 2)

    # sentence-transformers' own CachedMultipleNegativesRankingLoss on the same rows and chunk size (queries,
    # positives, negatives: 2 + 2 + 2 = 6 chunks), with the DDP model put in by its trainer's own code
    g_st, n_st = st_cached_mnrl_step(st_base, q_eq, d_eq[0::2], d_eq[1::2], counting_hook)
    ddp.zero_grad(set_to_none=True)
    gc = GradCache(ddp, InfoNCELoss(temperature=0.05), chunk_size=2, gather_across_devices=True)
    gc.forward_backward(qf, df, lambda q, d: make_batch(q, d, counts_eq), no_sync=ddp.no_sync)
    result["st_vs_embedkit_diff"] = max_diff(g_st, grads(ddp))
    result["st_grad_max"] = max(v.abs().max().item() for v in g_st.values())

    result["allreduce_calls"] = {"plain": n_plain, "gradcache_no_sync": n_on, "embedkit_gradcache_no_sync_off": n_off,
                                 "gradcache_unequal_split": n_gc_unequal, "chunks": chunks,
                                 "st_cached_mnrl": n_st, "st_cached_mnrl_chunks": 3 * -(-4 // 2)}
    result["no_sync_vs_plain_diff"] = max_diff(g_plain, g_on)
    result["no_sync_vs_sync_diff"] = max_diff(g_on, g_off)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{r}.json").write_text(json.dumps(result))


def st_cached_mnrl_step(model, queries: list[str], positives: list[str], negatives: list[str], hook
                        ) -> tuple[dict[str, torch.Tensor], int]:
    """One step of sentence-transformers' ``CachedMultipleNegativesRankingLoss`` (mini-batch 2, scale 20, gathered
    across ranks) on a DDP copy of ``model``; returns the gradients and the all-reduce hook calls."""
    from sentence_transformers.base.trainer import BaseTrainer
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    st_ddp = DDP(model)
    counter = {"n": 0}
    st_ddp.register_comm_hook(counter, hook)
    # the trainer's own override_model_in_loss (it recurses only through ``self``), not a copy of it
    binder = types.SimpleNamespace()
    binder.override_model_in_loss = types.MethodType(BaseTrainer.override_model_in_loss, binder)
    loss = binder.override_model_in_loss(
        CachedMultipleNegativesRankingLoss(model, scale=20.0, mini_batch_size=2, gather_across_devices=True), st_ddp)
    assert loss.model is st_ddp
    feats = [model.preprocess(t) for t in (queries, positives, negatives)]
    loss(feats, None).backward()
    return grads(st_ddp), counter["n"]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
