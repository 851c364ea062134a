"""Benchmark embedkit's GradCache against the uncached step and sentence-transformers' cached loss (MiniLM, CPU).

Two measurements, both on real texts (the packaged Debian sample: package synopsis -> long description):

1. **Step time** at equal batch (default 64 pairs, chunk / mini-batch 32), all configurations in ONE process,
   interleaved round by round so that the machine's load swings hit them alike; reported as ratios of medians:
   embedkit GradCache / embedkit uncached (target <= 1.3x), and for reference sentence-transformers
   ``CachedMultipleNegativesRankingLoss`` and plain ``MultipleNegativesRankingLoss`` at the same batch.
2. **Peak memory** (peak RSS, ``VmHWM``, of a fresh child process per configuration, so torch's allocator and
   everything else count): embedkit GradCache at batch 1024 vs the plain uncached step at batch 32 (target <= 1.25x), plus
   sentence-transformers' CachedMNRL at batch 1024 for reference.

Every step is a full training step: forward(s), backward, AdamW update. Same loss in all configurations: in-batch
InfoNCE, temperature 0.05 (= sentence-transformers' scale 20), cosine similarity, max_seq_length 128.

Run:
    HF_HUB_OFFLINE=1 .venv/bin/python eval/bench_gradcache.py            # ~10-20 min on 2 busy cores
    HF_HUB_OFFLINE=1 .venv/bin/python eval/bench_gradcache.py --rounds 2 --memory-batch 256   # quicker
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
MAX_LEN = 128


def load_texts(n: int) -> tuple[list[str], list[str], str]:
    """(queries, documents, source) -- n real pairs; the Debian sample, else the man-pages sample."""
    debian = ROOT / "embedkit" / "datasets" / "debian" / "train.jsonl.gz"
    if debian.exists():
        with gzip.open(debian, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        pairs = [(r["query"], r["positives"][0]) for r in rows]
        source = "embedkit/datasets/debian/train.jsonl.gz"
    else:
        man = ROOT / "embedkit" / "datasets" / "manpages"
        queries = {r["_id"]: r["text"] for r in map(json.loads, (man / "queries.jsonl").read_text().splitlines())}
        corpus = {r["_id"]: r["text"] for r in map(json.loads, (man / "corpus.jsonl").read_text().splitlines())}
        qrels = [ln.split("\t")[:2] for ln in (man / "qrels" / "test.tsv").read_text().splitlines()[1:]]
        pairs = [(queries[q], corpus[d]) for q, d in qrels if q in queries and d in corpus]
        source = "embedkit/datasets/manpages (Debian sample missing)"
    if len(pairs) < n:
        pairs = (pairs * (n // len(pairs) + 1))
    pairs = pairs[:n]
    return [q for q, _ in pairs], [d for _, d in pairs], source


# ----------------------------------------------------------------------------------------------- configurations


class Step:
    """One training configuration: ``run()`` performs a full optimizer step on its batch."""

    def __init__(self, kind: str, batch: int, chunk: int, queries: list[str], docs: list[str]) -> None:
        import torch

        from embedkit.models import load_model

        torch.manual_seed(0)
        self.kind, self.batch, self.chunk = kind, batch, chunk
        self.model = load_model("minilm", max_seq_length=MAX_LEN)
        self.model.train()
        self.qf = self.model.preprocess(queries[:batch])
        self.df = self.model.preprocess(docs[:batch])
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-5)
        if kind.startswith("st_"):
            from sentence_transformers.sentence_transformer.losses import (
                CachedMultipleNegativesRankingLoss,
                MultipleNegativesRankingLoss,
            )

            self.st_loss = (CachedMultipleNegativesRankingLoss(self.model, scale=20.0, mini_batch_size=chunk)
                            if kind == "st_cached_mnrl" else MultipleNegativesRankingLoss(self.model, scale=20.0))
        else:
            from embedkit.losses import InfoNCELoss
            from embedkit.training.gradcache import GradCache

            self.loss_fn = InfoNCELoss(temperature=0.05)
            textbook = kind == "embedkit_gradcache_textbook"
            self.gc = GradCache(self.model, self.loss_fn, chunk_size=chunk,
                                sort_by_length=not textbook, trim_padding=not textbook,
                                reuse_chunk_graph=not textbook)

    def run(self) -> float:
        from embedkit.losses import make_batch
        from embedkit.training.gradcache import compute_loss_uncached

        def build(q, d):
            return make_batch(q, d, 1)

        if self.kind.startswith("embedkit_gradcache"):
            loss, _ = self.gc.forward_backward(self.qf, self.df, build)
        elif self.kind == "embedkit_uncached":
            loss, _ = compute_loss_uncached(self.model, self.loss_fn, self.qf, self.df, build)
            loss.backward()
        else:  # sentence-transformers mutates the feature dicts: give it copies
            loss = self.st_loss([dict(self.qf), dict(self.df)], None)
            loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())


def time_configs(batch: int, chunk: int, rounds: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    queries, docs, source = load_texts(batch)
    kinds = ["embedkit_uncached", "embedkit_gradcache", "embedkit_gradcache_textbook", "st_cached_mnrl", "st_mnrl"]
    steps = {k: Step(k, batch, chunk, queries, docs) for k in kinds}
    for s in steps.values():  # warm-up (allocator, first-call costs)
        s.run()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for k in order:
            t0 = time.perf_counter()
            steps[k].run()
            times[k].append(time.perf_counter() - t0)
        print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {times[k][-1]:.2f}s" for k in kinds), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["embedkit_uncached"]
    return {
        "source": source, "batch": batch, "chunk": chunk, "rounds": rounds, "threads": threads,
        "median_s": med, "all_s": times,
        "ratio_vs_embedkit_uncached": {k: med[k] / base for k in kinds},
        "gradcache_vs_st_cached": med["embedkit_gradcache"] / med["st_cached_mnrl"],
    }


def memory_child(kind: str, batch: int, chunk: int, steps: int, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    queries, docs, _ = load_texts(batch)
    step = Step(kind, batch, chunk, queries, docs)
    t0 = time.perf_counter()
    for _ in range(steps):
        step.run()
    return {"kind": kind, "batch": batch, "chunk": chunk, "steps": steps,
            "seconds_per_step": (time.perf_counter() - t0) / steps,
            "max_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    ``VmHWM`` from ``/proc/self/status`` belongs to this process's own address space; ``ru_maxrss`` is NOT enough
    here: Linux carries the parent's peak across fork + exec, so every child would report at least the parent's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_memory(kind: str, batch: int, chunk: int, steps: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--memory-child", kind, "--batch", str(batch), "--chunk", str(chunk),
           "--steps", str(steps), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory child {kind} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64, help="pairs per step for the timing comparison")
    ap.add_argument("--chunk", type=int, default=32, help="GradCache chunk / CachedMNRL mini-batch")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds (after one warm-up round)")
    ap.add_argument("--memory-batch", type=int, default=1024, help="GradCache batch for the memory comparison")
    ap.add_argument("--plain-batch", type=int, default=32, help="uncached batch for the memory comparison")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-st-memory", action="store_true", help="skip CachedMNRL at the memory batch")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.batch, args.chunk, args.steps, args.threads)))
        return

    result: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "targets": {}}
    if not args.skip_memory:  # first, while this parent process is still small
        print("memory: one child process per configuration (peak RSS, VmHWM)", flush=True)
        mem = {
            "embedkit_uncached": run_memory("embedkit_uncached", args.plain_batch, args.chunk, 2, args.threads),
            "embedkit_gradcache": run_memory("embedkit_gradcache", args.memory_batch, args.chunk, 1, args.threads),
        }
        if not args.skip_st_memory:
            mem["st_cached_mnrl"] = run_memory("st_cached_mnrl", args.memory_batch, args.chunk, 1, args.threads)
        base = mem["embedkit_uncached"]["max_rss_mib"]
        result["memory"] = {"children": mem, "ratio_vs_plain_batch": {k: v["max_rss_mib"] / base for k, v in mem.items()}}
        result["targets"]["gradcache_memory_ratio<=1.25"] = result["memory"]["ratio_vs_plain_batch"]["embedkit_gradcache"] <= 1.25
        print(json.dumps(result["memory"], indent=1), flush=True)
    if not args.skip_timing:
        print(f"timing: batch {args.batch}, chunk {args.chunk}, {args.rounds} rounds", flush=True)
        timing = time_configs(args.batch, args.chunk, args.rounds, args.threads)
        result["timing"] = timing
        result["targets"]["gradcache_time_ratio<=1.3"] = timing["ratio_vs_embedkit_uncached"]["embedkit_gradcache"] <= 1.3
        print(json.dumps({k: timing[k] for k in ("median_s", "ratio_vs_embedkit_uncached", "gradcache_vs_st_cached")},
                         indent=1), flush=True)
    print(json.dumps(result["targets"]))
    if args.json:
        from embedkit.utils.io import atomic_file

        with atomic_file(args.json) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
