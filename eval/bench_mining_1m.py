"""Benchmark mining retrieval on a large synthetic corpus: the in-memory flat path vs the bounded (streamed) paths.

Why: ``embedkit mine`` on millions of documents used to hold the corpus matrix up to three times (gathered from
the cache, L2-normalised, copied into ``IndexFlatIP``): 4.5 GB for 1M x 384. The streamed paths read the cache's
shards block by block (``--block-size``, exact) or keep only IVF-PQ codes (``--index ivfpq``, exact re-scoring).

No model is needed: a seeded Gaussian mixture (clustered like real embeddings) is written straight into an
embedding cache (the same shards ``embedkit mine`` writes), and queries are perturbed corpus rows. Each arm runs in
its own process, so its peak RSS (``ru_maxrss``) is its own; the baseline (RSS after the imports) is reported
too. Arms:

  ============  =============================================================================================
  memory-flat   the default path: whole matrix from the cache, normalised, ``IndexFlatIP``, batched search
  stream-flat   ``block_size``: exact flat search block by block from the cache (same top-k)
  ivfpq         ``index=ivfpq``: codes only (pq_m bytes per document), top k x pq_refine re-scored exactly
  ============  =============================================================================================

It prints seconds, peak RSS, peak above baseline, recall@k of each arm against memory-flat, and the ratios.

Usage::

    python eval/bench_mining_1m.py                    # 1M x 384 (the lead runs it on a quiet machine)
    python eval/bench_mining_1m.py --size 20000       # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = ("memory-flat", "stream-flat", "ivfpq")


def _texts(n: int) -> list[str]:
    return [f"d{i}" for i in range(n)]


def _centres(args: argparse.Namespace) -> np.ndarray:
    return np.random.default_rng(args.seed).standard_normal((args.clusters, args.dim)).astype(np.float32)


def _vectors(ids: np.ndarray, centres: np.ndarray, seed: int, noise: float = 0.35) -> np.ndarray:
    """Row ``i`` depends on ``i`` only: a cluster centre plus seeded noise."""
    out = np.empty((len(ids), centres.shape[1]), dtype=np.float32)
    for j, i in enumerate(ids):
        rng = np.random.default_rng([seed, int(i)])
        out[j] = centres[rng.integers(len(centres))] + noise * rng.standard_normal(centres.shape[1])
    return out


def build(args: argparse.Namespace, root: Path) -> None:
    """Write the corpus into an embedding cache under ``root`` and the queries as ``queries.npy``."""
    from embedkit.mining.cache import EmbeddingCache

    centres = _centres(args)
    cache = EmbeddingCache(root / "cache", {"bench": "mining_1m", "dim": args.dim, "seed": args.seed},
                           shard_size=args.shard_size)
    t0 = time.perf_counter()
    cache.get_or_encode(_texts(args.size), lambda chunk: _vectors(np.array([int(t[1:]) for t in chunk]),
                                                                   centres, args.seed),
                        show_progress_bar=False, lazy=True)
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.choice(args.size, args.queries, replace=False)
    queries = _vectors(picks, centres, args.seed) + 0.2 * rng.standard_normal((args.queries, args.dim))
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    np.save(root / "queries.npy", queries.astype(np.float32), allow_pickle=False)
    print(f"corpus written: {args.size} x {args.dim} in {time.perf_counter() - t0:.1f}s ({cache.root})")


def run_arm(args: argparse.Namespace, root: Path) -> dict:
    """One arm, in this process: what ``embedkit mine`` does between encoding and filtering."""
    from embedkit.mining.cache import EmbeddingCache
    from embedkit.mining.config import MiningConfig
    from embedkit.mining.miner import retrieve

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queries = np.load(root / "queries.npy", allow_pickle=False)
    cache = EmbeddingCache(root / "cache", {"bench": "mining_1m", "dim": args.dim, "seed": args.seed},
                           shard_size=args.shard_size)
    t0 = time.perf_counter()
    texts = _texts(args.size)
    if args.arm == "memory-flat":
        emb = cache.get_or_encode(texts, lambda chunk: 1 / 0, show_progress_bar=False)  # all cached
        docs = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)  # as embed_texts does
        del emb
        cfg = MiningConfig(use_gpu=False)
    else:
        docs = cache.get_or_encode(texts, lambda chunk: 1 / 0, show_progress_bar=False, lazy=True)
        docs.normalize = True
        cfg = (MiningConfig(block_size=args.block_size, use_gpu=False) if args.arm == "stream-flat" else
               MiningConfig(index="ivfpq", nlist=args.nlist, nprobe=args.nprobe, pq_refine=args.pq_refine,
                            block_size=args.block_size, use_gpu=False))
    scores, ids = retrieve(cfg, docs, queries, args.k, show_progress_bar=False)
    seconds = time.perf_counter() - t0
    np.save(root / f"ids-{args.arm}.npy", ids, allow_pickle=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"arm": args.arm, "seconds": round(seconds, 2), "peak_rss_mb": round(peak, 1),
            "baseline_rss_mb": round(baseline, 1), "above_baseline_mb": round(peak - baseline, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000, help="corpus documents (default 1M)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=60, help="candidates per query (range_max + positives)")
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--shard-size", type=int, default=4096)
    ap.add_argument("--block-size", type=int, default=65536)
    ap.add_argument("--nlist", type=int, default=None, help="IVF-PQ cells (default 4 x sqrt(size))")
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--pq-refine", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    ap.add_argument("--root", help="work folder (default: a temporary one, removed afterwards)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # internal: run one arm in this process
    args = ap.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args, Path(args.root))))
        return 0
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bench_mining_1m-"))
    try:
        root.mkdir(parents=True, exist_ok=True)
        build(args, root)
        rows = []
        for arm in args.arms:
            cmd = [sys.executable, __file__, *_strip(sys.argv[1:]), "--arm", arm, "--root", str(root)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        ref = root / "ids-memory-flat.npy"
        exact = np.load(ref, allow_pickle=False) if ref.exists() else None
        for r in rows:
            if exact is not None:
                got = np.load(root / f"ids-{r['arm']}.npy", allow_pickle=False)
                r["recall_at_k"] = round(float(np.mean([len(set(a) & set(b)) / len(a)
                                                         for a, b in zip(got.tolist(), exact.tolist())])), 4)
        print(f"\n{args.size} x {args.dim} corpus, {args.queries} queries, k={args.k}")
        print(f"{'arm':<12} {'seconds':>8} {'peak RSS MB':>12} {'above base MB':>14} {'recall@k':>9}")
        for r in rows:
            print(f"{r['arm']:<12} {r['seconds']:>8} {r['peak_rss_mb']:>12} {r['above_baseline_mb']:>14} "
                  f"{r.get('recall_at_k', '-'):>9}")
        by = {r["arm"]: r for r in rows}
        result = {"size": args.size, "dim": args.dim, "queries": args.queries, "k": args.k, "arms": rows}
        if "memory-flat" in by:
            base = by["memory-flat"]
            for r in rows:
                if r is base:
                    continue
                mem = base["above_baseline_mb"] / max(r["above_baseline_mb"], 1e-9)
                speed = base["seconds"] / max(r["seconds"], 1e-9)
                result[f"{r['arm']}_memory_ratio"] = round(mem, 2)
                result[f"{r['arm']}_speed_ratio"] = round(speed, 2)
                print(f"{r['arm']}: {mem:.1f}x less memory above baseline than memory-flat, "
                      f"{speed:.2f}x its speed")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _strip(argv: list[str]) -> list[str]:
    """The parent's options minus the ones only the parent uses (--arms, --root, --json and their values)."""
    out, skip = [], False
    for a in argv:
        if skip:
            if a.startswith("--"):
                skip = False
            else:
                continue
        if a in ("--arms", "--root", "--json") or a.startswith(("--arms=", "--root=", "--json=")):
            skip = "=" not in a
            continue
        out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
