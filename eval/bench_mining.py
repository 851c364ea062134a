"""Benchmark ``embedkit mine`` against ``sentence_transformers.util.mine_hard_negatives`` (one process, one run).

Part 1 (real data, MiniLM): Debian package descriptions from ``eval/build_debian.py`` (full build) -- N training
queries (synopses) against a corpus of M long descriptions (their positives + other packages). Both miners run on
the same loaded model at equivalent settings:

  =========================  ==========================================================================
  embedkit                   sentence-transformers
  =========================  ==========================================================================
  range_min=0, range_max=R   range_min=0, range_max=R (it retrieves R + max_positives, like embedkit)
  max_score_ratio=0.95       relative_margin=0.05 (threshold = min_pos - 0.05 * |min_pos|)
  sampling="top"             sampling_strategy="top"
  index="flat"               use_faiss=True (IndexFlatIP)
  num_negatives=n            num_negatives=n, output_format="labeled-list" (keeps short lists)
  =========================  ==========================================================================

It prints: first-run wall time of each and the ratio; the time to re-mine with changed filters from embedkit's
cache (and the anchor's own ``cache_folder`` re-run); agreement = share of the anchor's negatives that embedkit
picked for the same query.

Part 2 (synthetic, FAISS only): IVF vs flat on >= 1M 384-d vectors drawn from a Gaussian mixture (clustered like
real embeddings): build time, search time for Q queries, recall@50 of IVF against the exact flat result.

Usage::

    python eval/build_debian.py --out /tmp/debian_full          # once
    python eval/bench_mining.py --data /tmp/debian_full --queries 3000 --docs 10000 --ivf-vectors 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402


def load_debian(folder: Path, n_queries: int, n_docs: int, seed: int) -> tuple[list, list[str]]:
    from embedkit.data.readers import load_corpus_texts, load_pairs

    pairs = list(load_pairs(folder / "train.jsonl"))
    rng = random.Random(seed)
    chosen = rng.sample(pairs, min(n_queries, len(pairs)))
    pos = {p.positives[0] for p in chosen}
    others = [t for t in load_corpus_texts(folder / "beir") if t not in pos]
    extra = rng.sample(others, max(0, min(len(others), n_docs - len(pos))))
    return chosen, extra


def run_mining(args: argparse.Namespace) -> dict:
    import logging

    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine

    from embedkit import encode, load_model
    from embedkit.mining import mine_hard_negatives

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    pairs, extra = load_debian(Path(args.data), args.queries, args.docs, args.seed)
    n_docs = len({p.positives[0] for p in pairs} | set(extra))
    print(f"data: {len(pairs)} queries, {n_docs} documents", flush=True)
    model = load_model("minilm")
    encode(model, [p.positives[0] for p in pairs[:64]])  # warm-up (thread pools, allocator)
    model.encode([p.positives[0] for p in pairs[:64]])
    n, r, ratio = args.num_negatives, args.range_max, 0.95
    work = Path(tempfile.mkdtemp(prefix="bench_mining_"))
    res: dict = {"queries": len(pairs), "docs": n_docs, "num_negatives": n, "range_max": r}

    def anchor(cache: str | None) -> tuple[float, dict[str, list[str]]]:
        ds = Dataset.from_dict({"query": [p.query for p in pairs], "positive": [p.positives[0] for p in pairs]})
        t = time.perf_counter()
        out = st_mine(ds, model, corpus=extra, range_min=0, range_max=r, relative_margin=1 - ratio,
                      num_negatives=n, sampling_strategy="top", output_format="labeled-list", use_faiss=True,
                      batch_size=32, verbose=False, cache_folder=cache)
        dt = time.perf_counter() - t
        return dt, {row["query"]: row["positive"][1:] for row in out}

    def ours(**kw) -> tuple[float, dict[str, list[str]], object]:
        t = time.perf_counter()
        settings = {"num_negatives": n, "range_max": r, "max_score_ratio": ratio, "sampling": "top",
                    "index": "flat", **kw}
        result = mine_hard_negatives(pairs, model, corpus=extra, cache_dir=str(work / "ek_cache"), **settings)
        dt = time.perf_counter() - t
        return dt, {p.query: p.negatives for p in result.pairs}, result.stats

    order = ["anchor", "ours"] if not args.ours_first else ["ours", "anchor"]
    for who in order:
        if who == "anchor":
            res["anchor_first_s"], anchor_negs = anchor(str(work / "st_cache"))
            print(f"anchor first run: {res['anchor_first_s']:.1f}s", flush=True)
        else:
            res["ours_first_s"], our_negs, stats = ours()
            print(f"embedkit first run: {res['ours_first_s']:.1f}s\n{stats.summary()}", flush=True)
    res["first_run_speedup"] = res["anchor_first_s"] / res["ours_first_s"]

    same = total = 0
    for q, negs in anchor_negs.items():
        mine = set(our_negs.get(q, []))
        same += sum(1 for d in negs if d in mine)
        total += len(negs)
    res["agreement"] = same / max(total, 1)
    res["anchor_negatives"] = total
    res["ours_negatives"] = sum(len(v) for v in our_negs.values())

    # re-mine with other filters: embedkit from its cache (the encoder must not be called), the anchor re-run
    # with its own cache_folder
    import embedkit.mining.miner as miner

    calls = {"n": 0}
    real = miner.encode

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    miner.encode = counting
    try:
        res["ours_remine_s"], _, stats2 = ours(range_min=2, sampling="random", max_score_margin=0.02,
                                               drop_duplicates=False)
    finally:
        miner.encode = real
    assert calls["n"] == 0, f"re-mining called the encoder {calls['n']} times: the cache missed"
    print(f"embedkit re-mine from cache: {res['ours_remine_s']:.2f}s\n{stats2.summary()}", flush=True)
    res["anchor_remine_cached_s"] = anchor(str(work / "st_cache"))[0]
    print(f"anchor re-run with its cache_folder: {res['anchor_remine_cached_s']:.2f}s", flush=True)
    res["remine_speedup_vs_our_first"] = res["ours_first_s"] / res["ours_remine_s"]
    res["remine_speedup_vs_anchor_first"] = res["anchor_first_s"] / res["ours_remine_s"]
    res["anchor_cache_key_model_name"] = model.model_card_data.base_model or ""
    shutil.rmtree(work, ignore_errors=True)
    return res


def run_ivf(args: argparse.Namespace) -> dict:
    import faiss

    from embedkit.mining.index import build_index, search

    rng = np.random.default_rng(args.seed)
    n, d, n_clusters, q = args.ivf_vectors, 384, 2000, args.ivf_queries
    centers = rng.standard_normal((n_clusters, d), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    assign = rng.integers(0, n_clusters, n)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):
        sl = slice(start, start + 100_000)
        x[sl] = centers[assign[sl]] + 0.06 * rng.standard_normal((len(assign[sl]), d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qa = rng.integers(0, n_clusters, q)
    queries = centers[qa] + 0.06 * rng.standard_normal((q, d), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    print(f"ivf: {n} x {d} vectors, {n_clusters} mixture components, {q} queries, faiss threads "
          f"{faiss.omp_get_max_threads()}", flush=True)
    res: dict = {"vectors": n, "dim": d, "queries": q}
    t = time.perf_counter()
    flat = build_index(x, "flat")
    res["flat_build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    _, exact = search(flat, queries, 50)
    res["flat_search_s"] = time.perf_counter() - t
    del flat
    print(f"flat: build {res['flat_build_s']:.1f}s search {res['flat_search_s']:.1f}s", flush=True)
    t = time.perf_counter()
    ivf = build_index(x, "ivf", nlist=args.nlist, nprobe=args.nprobe[0], seed=args.seed)
    res["ivf_build_s"] = time.perf_counter() - t
    res["nlist"] = args.nlist
    res["ivf"] = []
    for nprobe in args.nprobe:
        ivf.nprobe = nprobe
        t = time.perf_counter()
        _, approx = search(ivf, queries, 50)
        dt = time.perf_counter() - t
        recall = float(np.mean([len(set(a) & set(e)) / 50 for a, e in zip(approx, exact)]))
        row = {"nprobe": nprobe, "search_s": dt, "speedup": res["flat_search_s"] / dt, "recall@50": recall}
        res["ivf"].append(row)
        print(f"ivf nlist={args.nlist} nprobe={nprobe}: search {dt:.2f}s speedup {row['speedup']:.1f}x "
              f"recall@50 {recall:.4f} (build {res['ivf_build_s']:.1f}s)", flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="/tmp/debian_full", help="full build of eval/build_debian.py")
    ap.add_argument("--queries", type=int, default=3000)
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--num-negatives", type=int, default=7)
    ap.add_argument("--range-max", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours-first", action="store_true", help="run embedkit before the anchor")
    ap.add_argument("--skip-mining", action="store_true")
    ap.add_argument("--skip-ivf", action="store_true")
    ap.add_argument("--ivf-vectors", type=int, default=1_000_000)
    ap.add_argument("--ivf-queries", type=int, default=2000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    out: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if not args.skip_mining:
        out["mining"] = run_mining(args)
        m = out["mining"]
        print(f"\nRESULT mining {m['queries']} queries x {m['docs']} docs: first run anchor {m['anchor_first_s']:.1f}s, "
              f"embedkit {m['ours_first_s']:.1f}s -> {m['first_run_speedup']:.2f}x; re-mine from cache "
              f"{m['ours_remine_s']:.2f}s -> {m['remine_speedup_vs_our_first']:.0f}x vs embedkit first run, "
              f"{m['remine_speedup_vs_anchor_first']:.0f}x vs anchor first run (anchor re-run with its cache: "
              f"{m['anchor_remine_cached_s']:.2f}s); agreement {100 * m['agreement']:.1f}% of "
              f"{m['anchor_negatives']} anchor negatives", flush=True)
    if not args.skip_ivf:
        out["ivf"] = run_ivf(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
