"""Quality proof: base model vs a sentence-transformers fine-tune vs embedkit's recipe, on held-out real data.

Data: the packaged Debian package-description sample. Training pairs come from the train split; the test queries
belong to other source-package families (never seen in training) and are retrieved from a corpus that holds the
training documents too (~11k documents; ``--max-corpus`` subsamples it, keeping every relevant document).

Arms (same pairs, steps, batch size, learning rate, warm-up, max length and seed):

1. ``base``: all-MiniLM-L6-v2 as packaged;
2. ``sentence-transformers``: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss``;
3. ``embedkit``: ``recipes/minilm-cpu.yaml``'s components -- hard negatives mined with positive-aware filtering,
   false-negative masking, online hard-negative mixing, GradCache for a larger effective batch.

``--ablate`` adds one embedkit run per component with that component switched off.
``--decoder`` runs the SmolLM2-135M comparison (bidirectional + LoRA + mean pooling vs causal + last token).

Prints a table and writes ``OUT/quality.json`` and ``OUT/QUALITY.md``.

    .venv/bin/python eval/quality.py --quick                 # the README demo (a few minutes on CPU)
    .venv/bin/python eval/quality.py --steps 300 --ablate    # the full comparison (BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METRICS = ("ndcg@10", "recall@10", "mrr@10")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def eval_split(max_queries: int | None, max_corpus: int | None, seed: int):
    from embedkit.data.beir import BeirData, load_beir
    from embedkit.data.samples import sample_path

    data = load_beir(sample_path("debian-beir"))
    rng = random.Random(seed)
    qids = sorted(data.qrels)
    if max_queries and len(qids) > max_queries:
        qids = sorted(rng.sample(qids, max_queries))
    qrels = {q: data.qrels[q] for q in qids}
    relevant = {d for q in qids for d in qrels[q]}
    others = sorted(set(data.corpus) - relevant)
    if max_corpus and len(relevant) + len(others) > max_corpus:
        others = sorted(rng.sample(others, max(0, max_corpus - len(relevant))))
    keep = relevant | set(others)
    return BeirData(corpus={d: v for d, v in data.corpus.items() if d in keep},
                    queries={q: data.queries[q] for q in qids}, qrels=qrels, name=data.name, split=data.split)


def score(model: Any, beir: Any) -> dict[str, float]:
    from embedkit.evaluation.scoring import score_beir

    s = score_beir(model, beir, k_values=(10,))
    return {m: float(s[m]) for m in METRICS}


def train_pairs(max_pairs: int | None):
    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import sample_path

    pairs = list(load_pairs(sample_path("debian-train")))
    return pairs[:max_pairs] if max_pairs else pairs


def anchor_finetune(args: argparse.Namespace, pairs: list, out: Path):
    """What a user would otherwise do: sentence-transformers' trainer with MultipleNegativesRankingLoss."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from embedkit.models import resolve_model_path

    model = SentenceTransformer(resolve_model_path("minilm"))
    model.max_seq_length = args.max_seq_length
    ds = Dataset.from_dict({"anchor": [p.query for p in pairs], "positive": [p.positives[0] for p in pairs]})
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-tmp"), per_device_train_batch_size=args.batch_size, learning_rate=args.lr,
        max_steps=args.steps, warmup_steps=0.1, weight_decay=0.01, seed=args.seed, data_seed=args.seed,
        save_strategy="no", logging_steps=max(1, args.steps // 5), report_to=[], batch_sampler="no_duplicates",
        dataloader_drop_last=True, use_cpu=True,
    )
    loss = MultipleNegativesRankingLoss(model, scale=1 / args.temperature)
    SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss).train()
    return model


def embedkit_recipe(args: argparse.Namespace, pairs_path: Path, **off: bool) -> dict[str, Any]:
    """embedkit's default recipe (recipes/minilm-cpu.yaml) at this script's budget; ``off`` switches parts off."""
    infonce: dict[str, Any] = {"temperature": args.temperature}
    if not off.get("masking"):
        infonce["masking"] = {"margin": 0.1}
    if not off.get("mixing"):
        infonce["mixing"] = {"num_mixed": 8, "hardest_k": 4, "mix_query": False, "seed": args.seed}
    recipe: dict[str, Any] = {
        "model": {"name": "minilm", "max_seq_length": args.max_seq_length},
        "data": {"datasets": [{"path": str(pairs_path), "name": "debian",
                               "max_negatives": 0 if off.get("negatives") else args.negatives}]},
        "losses": {"infonce": infonce},
        "training": {"batch_size": args.batch_size * (1 if off.get("gradcache") else args.gradcache_factor),
                     "gradcache_chunk_size": None if off.get("gradcache") else args.batch_size,
                     "lr": args.lr, "max_steps": args.steps, "warmup_ratio": 0.1, "weight_decay": 0.01,
                     "seed": args.seed, "logging_steps": max(1, args.steps // 5)},
        "eval": {"before_training": False},
        "output": {"save_steps": None},
    }
    if not off.get("negatives"):
        recipe["miner"] = {"num_negatives": args.negatives, "range_min": args.range_min, "range_max": 50,
                           "max_score_ratio": 0.95}
    return recipe


def run_embedkit(recipe_dict: dict[str, Any], out: Path):
    from embedkit.models import load_model
    from embedkit.training.config import Recipe
    from embedkit.training.runner import run_recipe

    recipe = Recipe.model_validate(recipe_dict)
    result = run_recipe(recipe, out, overwrite=True)
    return load_model(str(result.final_dir))


def decoder_arms(args: argparse.Namespace, pairs_path: Path, beir: Any, out: Path) -> dict[str, dict[str, float]]:
    """SmolLM2-135M: bidirectional + LoRA + mean pooling vs causal + last-token pooling (same budget)."""
    rows: dict[str, dict[str, float]] = {}
    common = {"name": "smollm2", "max_seq_length": args.max_seq_length, "lora": {"r": 16, "alpha": 32}}
    for label, model_cfg in (
        ("smollm2 causal + last-token (base)", {**common, "bidirectional": False, "pooling": "last"}),
        ("smollm2 bidirectional + mean (base)", {**common, "bidirectional": True, "pooling": "mean"}),
    ):
        from embedkit.models import load_model

        cfg = {k: v for k, v in model_cfg.items() if k != "lora"}
        rows[label] = score(load_model(**cfg), beir)
        log(f"{label}: {rows[label]}")
    for label, model_cfg in (
        ("smollm2 causal + last-token, fine-tuned", {**common, "bidirectional": False, "pooling": "last"}),
        ("smollm2 bidirectional + LoRA + mean, fine-tuned", {**common, "bidirectional": True, "pooling": "mean"}),
    ):
        recipe = embedkit_recipe(args, pairs_path, negatives=True, gradcache=True)
        recipe["model"] = model_cfg
        recipe["training"]["lr"] = args.decoder_lr
        slug = label.split(",")[0].replace(" ", "-").replace("+", "")
        rows[label] = score(run_embedkit(recipe, out / slug), beir)
        log(f"{label}: {rows[label]}")
    return rows


def table(rows: dict[str, dict[str, float]], base: str) -> str:
    lines = ["| model | nDCG@10 | Recall@10 | MRR@10 | Δ nDCG@10 vs base |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        delta = 100 * (r["ndcg@10"] - rows[base]["ndcg@10"]) if base in rows else float("nan")
        lines.append(f"| {name} | {r['ndcg@10']:.4f} | {r['recall@10']:.4f} | {r['mrr@10']:.4f} | {delta:+.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="README demo: fewer steps, smaller eval corpus")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--gradcache-factor", type=int, default=2, help="embedkit batch = factor x batch size (GradCache)")
    ap.add_argument("--negatives", type=int, default=1, help="mined hard negatives per query for embedkit")
    ap.add_argument("--range-min", type=int, default=0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--decoder-lr", type=float, default=2e-4)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--max-queries", type=int, default=None)
    ap.add_argument("--max-corpus", type=int, default=None)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablate", action="store_true", help="also run embedkit with each component switched off")
    ap.add_argument("--decoder", action="store_true", help="also run the SmolLM2 bidirectional vs causal comparison")
    ap.add_argument("--skip-anchor", action="store_true")
    ap.add_argument("-o", "--output", default="runs/quality")
    args = ap.parse_args()
    if args.quick:
        args.steps = min(args.steps, 60)
        args.max_corpus = args.max_corpus or 3000
        args.max_queries = args.max_queries or 200
        args.max_pairs = args.max_pairs or 60 * args.batch_size * args.gradcache_factor

    import torch

    from embedkit.data.readers import write_pairs
    from embedkit.models import load_model

    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    beir = eval_split(args.max_queries, args.max_corpus, args.seed)
    pairs = train_pairs(args.max_pairs)
    pairs_path = out / "train.jsonl"
    write_pairs(pairs, pairs_path)
    log(f"data: {len(pairs)} training pairs; eval {len(beir.queries)} held-out queries x {len(beir.corpus)} docs")

    rows: dict[str, dict[str, float]] = {}
    rows["base all-MiniLM-L6-v2"] = score(load_model("minilm", max_seq_length=args.max_seq_length), beir)
    log(f"base: {rows['base all-MiniLM-L6-v2']}")
    if not args.skip_anchor:
        t = time.time()
        rows["sentence-transformers MNRL fine-tune"] = score(anchor_finetune(args, pairs, out), beir)
        log(f"anchor ({time.time() - t:.0f} s): {rows['sentence-transformers MNRL fine-tune']}")
    t = time.time()
    rows["embedkit recipe"] = score(run_embedkit(embedkit_recipe(args, pairs_path), out / "embedkit"), beir)
    log(f"embedkit ({time.time() - t:.0f} s): {rows['embedkit recipe']}")
    if args.ablate:
        for part in ("negatives", "masking", "mixing", "gradcache"):
            t = time.time()
            name = f"embedkit without {part}"
            rows[name] = score(run_embedkit(embedkit_recipe(args, pairs_path, **{part: True}),
                                            out / f"ablate-{part}"), beir)
            log(f"{name} ({time.time() - t:.0f} s): {rows[name]}")
    if args.decoder:
        rows.update(decoder_arms(args, pairs_path, beir, out))

    text = table(rows, "base all-MiniLM-L6-v2")
    settings = {k: v for k, v in vars(args).items()}
    (out / "quality.json").write_text(json.dumps({"settings": settings, "scores": rows}, indent=2))
    (out / "QUALITY.md").write_text(f"# Quality comparison\n\nsettings: `{json.dumps(settings)}`\n\n{text}\n")
    print(text)
    print(f"\n(total {time.time() - t_start:.0f} s; details in {out}/QUALITY.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
