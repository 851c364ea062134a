"""Train-step throughput: embedkit's trainer vs sentence-transformers' MNRL trainer, side by side in one process.

Both train the packaged all-MiniLM-L6-v2 on the same real Debian (synopsis -> description) pairs, on CPU, with the
same batch size, the same ``max_seq_length`` (so the same token counts), AdamW, no checkpoints, no evaluation:

* anchor: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` (in-batch negatives, scale 20);
* embedkit: ``EmbeddingTrainer`` (task-homogeneous sampler, collator with text hashes) + ``InfoNCELoss``
  (temperature 0.05 = scale 20, in-batch negatives), optionally with false-negative masking (``--masking``) and
  with length-sorted encode chunks (``--encode-chunk N`` = ``training.encode_chunk_size``).

Runs alternate so machine noise hits both, and the order flips every round (anchor first in odd rounds;
``--embedkit-first`` starts with embedkit; ``--fixed-order`` keeps the first order in every round): on this CPU
the engine that runs second in a round is measurably slower. Each run times the optimizer steps after
``--warmup`` steps with a ``TrainerCallback``. Prints steps/s per run, the median ratio and a JSON line.

Usage::

    python eval/bench_train.py --batch 32 --max-seq-length 64 --steps 10 --warmup 2 --rounds 2
    python eval/bench_train.py --max-seq-length 128 --encode-chunk 16 --rounds 4 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("EMBEDKIT_NO_PROGRESS", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402


class StepTimer(TrainerCallback):
    """Wall time of optimizer steps ``warmup+1 .. end``."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.t0: float | None = None
        self.t1: float | None = None
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.t0 = time.perf_counter()
        elif state.global_step > self.warmup:
            self.t1 = time.perf_counter()
            self.steps = state.global_step - self.warmup
        return control

    @property
    def steps_per_s(self) -> float:
        assert self.t0 is not None and self.t1 is not None
        return self.steps / (self.t1 - self.t0)


def load_pairs_subset(n: int):
    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import sample_path

    pairs = list(load_pairs(sample_path("debian-train")))[:n]
    return [p.query for p in pairs], [p.positives[0] for p in pairs]


def run_anchor(queries, docs, args, out: Path) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from embedkit import load_model

    torch.manual_seed(0)
    model = load_model("minilm", max_seq_length=args.max_seq_length)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
        learning_rate=2e-5, warmup_steps=0, report_to="none", save_strategy="no", logging_steps=10_000,
        disable_tqdm=True, seed=0, dataloader_drop_last=True,
    )
    timer = StepTimer(args.warmup)
    trainer = SentenceTransformerTrainer(
        model=model, args=targs, train_dataset=Dataset.from_dict({"anchor": queries, "positive": docs}),
        loss=MultipleNegativesRankingLoss(model, scale=20.0), callbacks=[timer],
    )
    trainer.train()
    return timer.steps_per_s


def run_embedkit(queries, docs, args, out: Path) -> float:
    from embedkit.data.schema import Pair
    from embedkit.losses.build import build_loss
    from embedkit.models import load_model
    from embedkit.training.collator import DatasetSpec, PairCollator, PairDataset
    from embedkit.training.config import parse_recipe
    from embedkit.training.runner import _training_args
    from embedkit.training.trainer import EmbeddingTrainer

    recipe = parse_recipe({
        "model": {"name": "minilm", "max_seq_length": args.max_seq_length},
        "data": {"datasets": [{"path": "unused", "name": "debian", "max_negatives": 0}]},
        "losses": {"infonce": {"temperature": 0.05, **({"masking": {"margin": 0.1}} if args.masking else {})}},
        "training": {"batch_size": args.batch, "max_steps": args.warmup + args.steps, "lr": 2e-5,
                     "encode_chunk_size": args.encode_chunk,
                     "warmup_ratio": 0.0, "logging_steps": 10_000, "seed": 0},
        "output": {"save_steps": None},
    })
    torch.manual_seed(0)
    model = load_model(recipe.model)
    specs = [DatasetSpec("debian", True, 0, None)]
    dataset = PairDataset([[Pair(q, [d]) for q, d in zip(queries, docs)]], specs)
    collator = PairCollator(model.tokenizer, specs, max_length=args.max_seq_length)
    targs = _training_args(recipe, out)
    targs.disable_tqdm = True
    timer = StepTimer(args.warmup)
    trainer = EmbeddingTrainer(model, targs, train_dataset=dataset, collator=collator,
                               loss_fn=build_loss(recipe.losses), callbacks=[timer],
                               encode_chunk_size=recipe.training.encode_chunk_size)
    trainer.train()
    return timer.steps_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-seq-length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--masking", action="store_true", help="embedkit with false-negative masking (margin 0.1)")
    ap.add_argument("--encode-chunk", type=int, default=None,
                    help="embedkit's training.encode_chunk_size (length-sorted sub-batches with a graph)")
    ap.add_argument("--embedkit-first", action="store_true", help="run embedkit first in round 1")
    ap.add_argument("--fixed-order", action="store_true", help="do not flip the order every round")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.batch * (args.warmup + args.steps + 2)
    queries, docs = load_pairs_subset(n)
    results: dict[str, list[float]] = {"sentence-transformers MNRL": [], "embedkit": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ek_first = args.embedkit_first != (r % 2 == 1 and not args.fixed_order)
            if ek_first:
                b = run_embedkit(queries, docs, args, Path(tmp) / f"ek{r}")
                a = run_anchor(queries, docs, args, Path(tmp) / f"st{r}")
            else:
                a = run_anchor(queries, docs, args, Path(tmp) / f"st{r}")
                b = run_embedkit(queries, docs, args, Path(tmp) / f"ek{r}")
            results["sentence-transformers MNRL"].append(a)
            results["embedkit"].append(b)
            print(f"round {r + 1}: sentence-transformers {a:.3f} steps/s | embedkit {b:.3f} steps/s | "
                  f"ratio {b / a:.2f}x ({'embedkit' if ek_first else 'anchor'} first)", flush=True)
    ratios = [b / a for a, b in zip(results["sentence-transformers MNRL"], results["embedkit"])]
    summary = {
        "batch": args.batch, "max_seq_length": args.max_seq_length, "timed_steps": args.steps,
        "rounds": args.rounds, "masking": args.masking, "encode_chunk": args.encode_chunk,
        "embedkit_first": args.embedkit_first, "fixed_order": args.fixed_order, "threads": torch.get_num_threads(),
        "steps_per_s": results, "ratio_median": statistics.median(ratios), "ratios": ratios,
    }
    print(f"embedkit / sentence-transformers train-step throughput: median {summary['ratio_median']:.2f}x "
          f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
