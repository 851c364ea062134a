"""Quality proof: base model vs a sentence-transformers fine-tune vs embedkit's recipe, on held-out real data.

Data: the packaged Debian package-description sample. Training pairs come from the train split; the test queries
belong to other source-package families (never seen in training) and are retrieved from a corpus that holds the
training documents too (``--max-corpus 10000`` of the ~11k documents by default, every relevant one kept).

Arms (same pairs, steps, batch size, learning rate, warm-up, max length and seed):

1. base all-MiniLM-L6-v2 as packaged;
2. the anchor: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` (in-batch negatives);
3. embedkit's default recipe (``recipes/minilm-cpu.yaml``'s components): hard negatives mined with positive-aware
   filtering, false-negative masking, GradCache for a larger batch (``--gradcache-factor`` x ``--batch-size`` pairs
   per step, ``--gradcache-chunk`` rows per forward pass: the memory of the anchor's batch). Online hard-negative
   mixing is available but off by default: it hurt in the ablation (BENCHMARKS.md).

``--ablate`` adds one embedkit run per entry of ``ABLATIONS`` (one component changed each, plus everything off);
``--teacher DIR`` adds the default recipe plus listwise distillation from a local bi-encoder's scores;
``--decoder`` adds the SmolLM2-135M comparison (bidirectional + LoRA + mean pooling vs causal + last token).

Prints the table and writes ``OUT/QUALITY.md``, ``OUT/quality.json`` and ``OUT/report/`` (REPORT.md, comparison.png,
summary.json, as ``embedkit eval`` writes them). Every arm's scores are written as soon as it finishes.

    .venv/bin/python eval/quality.py --quick -o runs/demo     # the README demo (scripts/demo.sh)
    .venv/bin/python eval/quality.py -o runs/quality          # the full comparison (BENCHMARKS.md)
    .venv/bin/python eval/quality.py --quick --ablate         # which component helps, which hurts

On a GPU machine, a larger budget from the full train split (``eval/build_debian.py``, 52k pairs) -- the
``BENCHMARKS.md`` H100 run; ``--bf16`` for mixed precision, ``--decoder --skip-anchor --skip-embedkit`` for the
decoder arms with their tokens/s (and MFU with ``--bf16``):

    python eval/build_debian.py --out data/debian     # needs apt's package lists (Debian/Ubuntu)
    python eval/quality.py --steps 800 --batch-size 32 --gradcache-factor 2 --anchor-batch-size 64 \
        --max-corpus 0 --train-pairs data/debian/train.jsonl -o runs/quality_gpu
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import TrainerCallback  # noqa: E402

METRICS = ("ndcg@10", "recall@10", "mrr@10")


class TrainClock(TrainerCallback):
    """Times a trainer's optimizer-step loop (GPU-synchronised): all steps, and the steps after the first ``skip``.

    The wall time an arm reports also holds model loading and mining; this clock is the training loop alone,
    and its steady part (after warm-up: allocator, kernels, autotuning) is what throughput figures use.
    """

    def __init__(self, skip: int = 5) -> None:
        self.skip, self.steps = skip, 0
        self.t0 = self.t_skip = self.t1 = 0.0

    @staticmethod
    def _now() -> float:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = self.t_skip = self._now()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.steps = state.global_step
        if state.global_step == self.skip:
            self.t_skip = self._now()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t1 = self._now()

    def summary(self) -> dict[str, float]:
        steady = self.steps - self.skip if self.steps > self.skip else self.steps
        steady_s = self.t1 - (self.t_skip if self.steps > self.skip else self.t0)
        return {"loop_s": round(self.t1 - self.t0, 2), "steps": self.steps,
                "steps_per_s": round(steady / steady_s, 3) if steady_s > 0 else 0.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def eval_split(max_queries: int | None, max_corpus: int | None, seed: int):
    from embedkit.data.beir import load_beir
    from embedkit.data.samples import sample_path

    return load_beir(sample_path("debian-beir")).subset(max_queries, max_corpus, seed=seed)


def score(model: Any, beir: Any) -> dict[str, float]:
    from embedkit.evaluation.scoring import score_beir

    s = score_beir(model, beir, k_values=(10,))
    return {m: float(s[m]) for m in METRICS}


def train_pairs(max_pairs: int | None, path: Path | None = None, seed: int = 42):
    """The packaged sample's first ``max_pairs`` pairs, or a seeded random ``max_pairs`` of a larger ``path``.

    ``path`` is for budgets beyond the 4,000 packaged pairs, e.g. the full train split of
    ``eval/build_debian.py`` (52k pairs, sorted by package name, hence the shuffle). It must come from the same
    build as the packaged held-out queries; :func:`main` refuses a file that holds any of them.
    """
    import random

    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import sample_path

    if path is None:
        pairs = list(load_pairs(sample_path("debian-train")))
        return pairs[:max_pairs] if max_pairs else pairs
    pairs = list(load_pairs(path))
    random.Random(seed).shuffle(pairs)
    return pairs[:max_pairs] if max_pairs else pairs


def refuse_leaked(pairs: list, held_out_queries: Any, path: Path) -> None:
    """Stop before training when a ``--train-pairs`` file holds any held-out test query (the score would lie)."""
    held_out = set(held_out_queries)
    leaked = sum(p.query in held_out for p in pairs)
    if leaked:
        raise SystemExit(f"quality.py: {path} holds {leaked} of the held-out test queries; build it with "
                         "eval/build_debian.py (the same family split as the packaged sample)")


def anchor_finetune(args: argparse.Namespace, pairs: list, out: Path):
    """What a user would otherwise do: sentence-transformers' trainer with MultipleNegativesRankingLoss."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from embedkit.models import resolve_model_path

    model = SentenceTransformer(resolve_model_path("minilm"))
    model.max_seq_length = args.max_seq_length
    clock = TrainClock()
    ds = Dataset.from_dict({"anchor": [p.query for p in pairs], "positive": [p.positives[0] for p in pairs]})
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-tmp"), per_device_train_batch_size=args.anchor_batch_size, learning_rate=args.lr,
        max_steps=args.steps, warmup_steps=0.1, weight_decay=0.01, seed=args.seed, data_seed=args.seed,
        save_strategy="no", logging_steps=max(1, args.steps // 5), report_to=[], batch_sampler="no_duplicates",
        dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(), bf16=args.bf16,
    )
    loss = MultipleNegativesRankingLoss(model, scale=1 / args.temperature)
    SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss, callbacks=[clock]).train()
    return model, clock


#: embedkit's default recipe components at this script's budget (recipes/minilm-cpu.yaml uses the same settings).
#: Online hard-negative mixing is off: switched on, it cost 1.4 nDCG@10 points in the ablation (BENCHMARKS.md).
DEFAULT_MASKING: dict[str, Any] | None = {"margin": 0.1}
DEFAULT_MIXING: dict[str, Any] | None = None
MIXING: dict[str, Any] = {"num_mixed": 8, "hardest_k": 4, "mix_query": False}

#: --ablate: one embedkit run per entry, with that change to the default recipe
ABLATIONS: dict[str, dict[str, Any]] = {
    "without mined hard negatives": {"negatives": 0},
    "without false-negative masking": {"masking": None},
    "masking margin -0.1 (also masks just below the positive)": {"masking": {"margin": -0.1}},
    "with hard-negative mixing (8 mixes of the 4 hardest)": {"mixing": MIXING},
    "with mixing, query-negative mixes too": {"mixing": {**MIXING, "mix_query": True}},
    "plain in-batch InfoNCE (no mined negatives, masking, mixing or GradCache)": {
        "negatives": 0, "masking": None, "mixing": None, "gradcache": False},
}


def embedkit_recipe(args: argparse.Namespace, pairs_path: Path, out: Path, **change: Any) -> dict[str, Any]:
    """embedkit's default recipe at this script's budget; ``change`` swaps one component (see ``ABLATIONS``)."""
    masking = change.get("masking", DEFAULT_MASKING)
    mixing = change.get("mixing", DEFAULT_MIXING)
    negatives = int(change.get("negatives", args.negatives))  # mined per query; 0: in-batch negatives only
    batch = args.batch_size * args.gradcache_factor
    gradcache = change.get("gradcache", True) and args.gradcache_chunk < batch
    infonce: dict[str, Any] = {"temperature": args.temperature, **change.get("infonce", {})}
    if masking is not None:
        infonce["masking"] = dict(masking)
    if mixing is not None:
        infonce["mixing"] = {**mixing, "seed": args.seed}
    recipe: dict[str, Any] = {
        "model": {"name": "minilm", "max_seq_length": args.max_seq_length},
        "data": {"datasets": [{"path": str(pairs_path), "name": "debian",
                               "max_negatives": negatives}]},
        "losses": {"infonce": infonce},
        "training": {"batch_size": batch, "gradcache_chunk_size": args.gradcache_chunk if gradcache else None,
                     "lr": args.lr, "max_steps": args.steps, "warmup_ratio": 0.1, "weight_decay": 0.01,
                     "seed": args.seed, "logging_steps": max(1, args.steps // 5), "bf16": args.bf16},
        "eval": {"before_training": False},
        "output": {"save_steps": None},
    }
    recipe["training"].update(change.get("training", {}))
    if negatives:
        # one embedding cache for every arm: the corpus is embedded once by the base model
        recipe["miner"] = {"num_negatives": negatives, "range_min": args.range_min, "range_max": 50,
                           "max_score_ratio": 0.95, "cache_dir": str(out / "mining-cache")}
    teacher = change.get("teacher")
    if teacher is not None:
        if not negatives:
            raise SystemExit("quality.py: the distillation arm needs mined negatives (the teacher scores them)")
        recipe["miner"].update(teacher=str(teacher), teacher_type="bi")
        recipe["losses"]["listwise"] = {"weight": args.kd_weight, "temperature": args.temperature,
                                        "teacher_temperature": args.teacher_temperature}
    return recipe


def run_embedkit(recipe_dict: dict[str, Any], out: Path):
    """Train one recipe; returns the trained model and the clock of its training loop."""
    from embedkit.models import load_model
    from embedkit.training.config import Recipe
    from embedkit.training.runner import run_recipe

    recipe = Recipe.model_validate(recipe_dict)
    clock = TrainClock()
    result = run_recipe(recipe, out, overwrite=True, callbacks=[clock])
    return load_model(str(result.final_dir)), clock


#: The fine-tuned decoder arms ``--decoder-arms`` picks from: key -> (label, model overrides). All share SmolLM2-135M,
#: LoRA r 16 / alpha 32, the in-batch recipe of ``decoder_recipe`` and the budget; the default pair is the issue's
#: comparison, the others split it into its two changes (attention, pooling) and try latent-attention pooling.
DECODER_ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "causal-last": ("smollm2 causal + last-token, fine-tuned", {"bidirectional": False, "pooling": "last"}),
    "bidir-mean": ("smollm2 bidirectional + LoRA + mean, fine-tuned", {"bidirectional": True, "pooling": "mean"}),
    "causal-mean": ("smollm2 causal + LoRA + mean, fine-tuned", {"bidirectional": False, "pooling": "mean"}),
    "bidir-last": ("smollm2 bidirectional + LoRA + last-token, fine-tuned", {"bidirectional": True, "pooling": "last"}),
    "bidir-latent": ("smollm2 bidirectional + LoRA + latent attention, fine-tuned",
                     {"bidirectional": True, "pooling": "latent_attention",
                      "latent_attention": {"num_latents": 128, "num_heads": 8}}),
    # LLM2Vec's order: MNTP (``--decoder-mntp-steps`` of masked next-token prediction, LoRA merged), then the same
    # contrastive run as bidir-mean; its train s counts both stages (only the second with --decoder-mntp-model)
    "bidir-mntp-mean": ("smollm2 MNTP + bidirectional + LoRA + mean, fine-tuned",
                        {"bidirectional": True, "pooling": "mean", "adapt": "mntp"}),
    # a probe of what MNTP taught: the adapted weights run causally (as causal-mean). If the gain survived without
    # bidirectional attention, it would be domain adaptation on the pairs' texts rather than the attention switch
    "causal-mntp-mean": ("smollm2 MNTP weights, causal + LoRA + mean, fine-tuned",
                         {"bidirectional": False, "pooling": "mean", "adapt": "mntp"}),
    # NV-Embed's pooling on the adapted model: does latent attention pay once the attention switch is adapted?
    "bidir-mntp-latent": ("smollm2 MNTP + bidirectional + LoRA + latent attention, fine-tuned",
                          {"bidirectional": True, "pooling": "latent_attention",
                           "latent_attention": {"num_latents": 128, "num_heads": 8}, "adapt": "mntp"}),
    # the control for the MNTP arms: the same number of steps on the same texts, as ordinary causal-LM training
    # (``embedkit mntp --objective clm``), before the causal arms' contrastive run -- so that both sides of the
    # comparison have read the domain's texts, and only the attention differs
    "causal-clm-last": ("smollm2 CLM + causal + LoRA + last-token, fine-tuned",
                        {"bidirectional": False, "pooling": "last", "adapt": "clm"}),
    "causal-clm-mean": ("smollm2 CLM + causal + LoRA + mean, fine-tuned",
                        {"bidirectional": False, "pooling": "mean", "adapt": "clm"}),
}
#: the arms whose model is first adapted on the pairs' texts, by objective (``embedkit mntp --objective``)
ADAPTED_ARMS = {objective: tuple(k for k, (_, o) in DECODER_ARMS.items() if o.get("adapt") == objective)
                for objective in ("mntp", "clm")}
MNTP_ARMS, CLM_ARMS = ADAPTED_ARMS["mntp"], ADAPTED_ARMS["clm"]
#: ``--decoder-prompts``: the query instruction of ``recipes/smollm2-bidirectional-lora.yaml`` (NV-Embed style)
DECODER_INSTRUCTION = "Given a short package synopsis, retrieve the package description"
DECODER_PROMPTS = {"style": "nv-embed", "instruction": DECODER_INSTRUCTION}  # --decoder-prompts, every arm
DEFAULT_DECODER_ARMS = ("causal-last", "bidir-mean")


def decoder_recipe(args: argparse.Namespace, pairs_path: Path, out: Path, model_cfg: dict[str, Any]) -> dict[str, Any]:
    """The recipe of one fine-tuned decoder arm: the decoder learning rate, in-batch negatives by default.

    Every arm gets the same recipe: the comparison is about attention and pooling. ``--decoder-negatives N`` adds N
    hard negatives per query mined by base MiniLM (``miner.model``; positive-aware filtering as in the default
    recipe): mining with the decoder itself would embed the corpus with a 135M model on every arm (slow on CPU,
    and an untrained decoder ranks near chance), and one MiniLM mining serves all arms through the shared cache.
    ``--decoder-no-masking`` turns false-negative masking off: it trusts the model's own scores, which for an
    untrained decoder are near chance.
    """
    recipe = embedkit_recipe(args, pairs_path, out, negatives=args.decoder_negatives,
                             masking=None if args.decoder_no_masking else DEFAULT_MASKING)
    recipe["model"] = model_cfg
    recipe["training"]["lr"] = args.decoder_lr
    if args.decoder_negatives:
        recipe["miner"]["model"] = "minilm"
    return recipe


def decoder_arms(args: argparse.Namespace, pairs_path: Path, pairs: list, arm: Any) -> None:
    """SmolLM2-135M: bidirectional + LoRA + mean pooling vs causal + last-token pooling (same budget).

    ``arm(name, train)`` scores and records each model as soon as it exists. Fine-tuned arms also get
    ``tokens_per_s`` (real, untruncated-to-padding tokens of the pairs trained on, over the steady training loop)
    -- each query (with its ``--decoder-prompts`` instruction), its positive and its ``--decoder-negatives`` mined
    negatives, see :func:`tokens_per_example`
    -- and, on a GPU with ``--bf16``, ``mfu``: 6 x parameters x tokens/s over ``--peak-tflops`` (attention FLOPs
    ignored, LoRA's frozen weights counted as trained -- the usual convention, an upper bound on the work done).
    """
    from embedkit.models import load_model

    common: dict[str, Any] = {"name": "smollm2", "max_seq_length": args.max_seq_length, "lora": {"r": 16, "alpha": 32}}
    if args.decoder_prompts:  # every arm, trained or not, gets the same query instruction
        common.update(prompts=dict(DECODER_PROMPTS), exclude_prompt=True)
    untrained = (
        ("smollm2 causal + last-token (base)", {**common, "bidirectional": False, "pooling": "last"}),
        ("smollm2 bidirectional + mean (base)", {**common, "bidirectional": True, "pooling": "mean"}),
    )
    for label, model_cfg in () if args.decoder_skip_base else untrained:
        cfg = {k: v for k, v in model_cfg.items() if k not in ("lora", "name")}
        arm(label, lambda cfg=cfg: load_model("smollm2", **cfg), trained=False)
    per_example, params = 0.0, 0
    # one adaptation stage per objective, before the run's first arm that needs it, serves all its arms (none when
    # an adapted folder is given)
    given = {"mntp": args.decoder_mntp_model, "clm": args.decoder_clm_model}
    first = {objective: next((k for k in args.decoder_arms if k in arms), None) if given[objective] is None else None
             for objective, arms in ADAPTED_ARMS.items()}
    for key in args.decoder_arms:
        label, overrides = DECODER_ARMS[key]
        model_cfg = {**common, **overrides}
        objective = model_cfg.pop("adapt", None)
        slug = label.split(",")[0].replace(" ", "-").replace("+", "")
        adapt = objective if objective and first[objective] == key else None
        if objective:
            model_cfg["name"] = str(given[objective] or Path(args.output) / f"smollm2-{objective}")
        recipe = decoder_recipe(args, pairs_path, Path(args.output), model_cfg)

        def train(recipe=recipe, slug=slug, adapt=adapt):
            if adapt:
                run_decoder_adaptation(args, pairs_path, Path(recipe["model"]["name"]), adapt)
            return run_embedkit(recipe, Path(args.output) / slug)

        row = arm(label, train)
        if row.get("steps_per_s"):
            if not per_example:
                per_example, params = decoder_work(args, pairs)
            tok_s = row["steps_per_s"] * per_example * args.batch_size * max(1, args.gradcache_factor)
            row["tokens_per_s"] = round(tok_s)
            if args.bf16 and args.peak_tflops:
                row["mfu"] = round(6 * params * tok_s / (args.peak_tflops * 1e12), 4)
            log(f"{label}: {row['steps_per_s']:.2f} steps/s, {tok_s:,.0f} tokens/s"
                + (f", MFU {100 * row['mfu']:.1f} %" if "mfu" in row else ""))


def run_decoder_adaptation(args: argparse.Namespace, pairs_path: Path, out: Path, objective: str) -> None:
    """MNTP (or its CLM control) on the training pairs' texts: ``--decoder-mntp-steps`` steps, LoRA r 16,
    ``--decoder-lr``, the same batch and length; merged into ``out``."""
    from embedkit.training.mntp import MNTPConfig, run_mntp, summary_line

    cfg = MNTPConfig(model="smollm2", data=str(pairs_path), steps=args.decoder_mntp_steps, batch_size=args.batch_size,
                     lr=args.decoder_lr, max_seq_length=args.max_seq_length, seed=args.seed, bf16=args.bf16,
                     lora={"r": 16, "alpha": 32}, objective=objective)
    log(summary_line(cfg, run_mntp(cfg, out, overwrite=True)))


def tokens_per_example(tokenizer: Any, pairs: list, max_seq_length: int, negatives: int,
                       query_prompt: str = "") -> float:
    """Mean tokens one training example costs the encoder: its query (after ``query_prompt``), its positive and
    ``negatives`` mined negatives, each truncated to ``max_seq_length``.

    The mined negatives are documents of the same corpus, written per arm after this is needed, so they are counted
    at the positives' mean length. In-batch negatives cost nothing: their embeddings are reused.
    """
    if not pairs:
        return 0.0

    def mean_len(texts: list[str]) -> float:
        ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_seq_length)["input_ids"]
        return sum(len(i) for i in ids) / len(ids)

    queries = [query_prompt + p.query for p in pairs]
    return mean_len(queries) + (1 + negatives) * mean_len([p.positives[0] for p in pairs])


def decoder_work(args: argparse.Namespace, pairs: list) -> tuple[float, int]:
    """(:func:`tokens_per_example` at ``--max-seq-length``, SmolLM2 parameters) for the throughput figures."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from embedkit.models import resolve_model_path
    from embedkit.models.prompts import build_prompts

    path = resolve_model_path("smollm2")
    prompt = build_prompts(**DECODER_PROMPTS)["query"] if args.decoder_prompts else ""
    per_example = tokens_per_example(AutoTokenizer.from_pretrained(path), pairs, args.max_seq_length,
                                     args.decoder_negatives, query_prompt=prompt)
    import torch

    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModel.from_config(AutoConfig.from_pretrained(path)).parameters())
    return per_example, n


def table(rows: dict[str, dict[str, float]], base: str, ref: str | None = None) -> str:
    """Markdown table; deltas in nDCG@10 points against ``base`` (and ``ref`` when given)."""
    head = "| model | nDCG@10 | Recall@10 | MRR@10 | Δ vs base |" + (" Δ vs ST |" if ref else "") + " train s |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['mrr@10']:.4f}"]
        cells.append(f"{100 * (r['ndcg@10'] - rows[base]['ndcg@10']):+.2f}" if base in rows else "")
        if ref:
            cells.append(f"{100 * (r['ndcg@10'] - rows[ref]['ndcg@10']):+.2f}" if ref in rows and name != base else "")
        cells.append(f"{r['train_s']:.0f}" if r.get("train_s") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BASE, ANCHOR, EMBEDKIT = "base all-MiniLM-L6-v2", "sentence-transformers MNRL fine-tune", "embedkit default recipe"


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings as JSON-ready values (paths such as ``--teacher`` become strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def write_outputs(out: Path, rows: dict[str, dict[str, float]], args: argparse.Namespace, beir: Any,
                  elapsed: float) -> str:
    """quality.json + QUALITY.md (the table) + report/REPORT.md and comparison.png (embedkit's eval report)."""
    from datetime import datetime, timezone

    from embedkit.evaluation.report import write_report
    from embedkit.evaluation.runner import CheckpointInfo, EvalResults, TaskScore

    ref = next((name for name in rows if name.startswith(ANCHOR)), None)
    text = table(rows, BASE, ref)
    settings = run_settings(args)
    data = f"{len(beir.queries)} held-out queries x {len(beir.corpus)} documents"
    (out / "quality.json").write_text(json.dumps({"settings": settings, "data": data, "elapsed_s": round(elapsed),
                                                  "scores": rows}, indent=2))
    (out / "QUALITY.md").write_text(f"# Quality comparison\n\n{data}; {elapsed / 60:.1f} min in all.\n\n"
                                    f"settings: `{json.dumps(settings)}`\n\n{text}\n")
    task = {"name": "debian-heldout", "type": "Retrieval", "main_score": "ndcg_at_10", "source": beir.source or "",
            "revision": "sample"}
    checkpoints = [CheckpointInfo(label=name, source=name, model_name=name, revision="-") for name in rows]
    scores = {name: {task["name"]: TaskScore(task["name"], "Retrieval", "ndcg_at_10", r["ndcg@10"],
                                             {m: r[m] for m in METRICS})} for name, r in rows.items()}
    write_report(EvalResults(checkpoints, [task], scores, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             scorer="embedkit.evaluation.score_beir (exact search; equals mteb's nDCG@10, tested)"),
                 out / "report")
    return text


def check_adapted_folder(ap: argparse.ArgumentParser, objective: str, folder: Path, arms: list[str]) -> None:
    """Refuse (usage error) a ``--decoder-{objective}-model`` no chosen arm uses, or one not adapted that way."""
    flag = f"--decoder-{objective}-model"
    if not set(ADAPTED_ARMS[objective]) & set(arms):
        ap.error(f"{flag} is used only by the {' / '.join(ADAPTED_ARMS[objective])} arms: add one to --decoder-arms")
    record = folder / "mntp.json"
    if not record.is_file():
        ap.error(f"{flag} {folder}: no mntp.json there; pass the folder that embedkit mntp wrote (or drop the flag "
                 f"to run {objective.upper()} here)")
    try:
        # folders written before the objective existed are MNTP ones
        saved = json.loads(record.read_text()).get("config", {}).get("objective", "mntp")
    except (json.JSONDecodeError, AttributeError):
        ap.error(f"{flag} {record}: not the JSON object embedkit mntp writes; re-run embedkit mntp")
    if saved != objective:
        ap.error(f"{flag} {folder}: adapted with objective {saved!r}, not {objective!r}; pass it as "
                 f"--decoder-{saved}-model, or adapt with embedkit mntp --objective {objective}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="README demo: 30 steps, batch 16 (embedkit 32 with GradCache), 200 queries x 2,000 documents")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32,
                    help="the sentence-transformers batch, and embedkit's rows per forward pass (GradCache chunk)")
    ap.add_argument("--gradcache-factor", type=int, default=2,
                    help="embedkit's batch = factor x batch size, in GradCache chunks of --gradcache-chunk rows")
    ap.add_argument("--gradcache-chunk", type=int, default=None, help="default: --batch-size")
    ap.add_argument("--anchor-batch-size", type=int, default=None,
                    help="sentence-transformers batch (default: --batch-size); e.g. factor x batch as a control")
    ap.add_argument("--skip-embedkit", action="store_true", help="base and anchor only (control runs)")
    ap.add_argument("--negatives", type=int, default=1, help="mined hard negatives per query for embedkit")
    ap.add_argument("--range-min", type=int, default=0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--decoder-lr", type=float, default=2e-4)
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--max-queries", type=int, default=None, help="held-out queries (default: all 400)")
    ap.add_argument("--max-corpus", type=int, default=10_000, help="documents to retrieve from (0: all ~11k)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablate", action="store_true", help="also run embedkit once per entry of ABLATIONS")
    ap.add_argument("--decoder", action="store_true", help="also run the SmolLM2 bidirectional vs causal comparison")
    ap.add_argument("--decoder-skip-base", action="store_true",
                    help="with --decoder: only the fine-tuned arms (the untrained ones take ~9 min each on a 2-core "
                         "CPU and do not depend on the training budget)")
    ap.add_argument("--decoder-arms", default=",".join(DEFAULT_DECODER_ARMS),
                    help=f"with --decoder: comma-separated fine-tuned arms out of {', '.join(DECODER_ARMS)} "
                         "(causal-mean, bidir-last and bidir-latent split the comparison into attention and "
                         "pooling; bidir-mntp-mean adapts the model with MNTP first; causal-mntp-mean runs those "
                         "adapted weights causally; bidir-mntp-latent pools them with latent attention; "
                         "causal-clm-last / causal-clm-mean are the control: the same steps of ordinary causal-LM "
                         "training on the same texts first)")
    ap.add_argument("--decoder-mntp-steps", type=int, default=120,
                    help="MNTP steps before the contrastive run of the MNTP arms (embedkit mntp), and CLM steps "
                         "before the CLM arms (embedkit mntp --objective clm): the control gets the same budget")
    ap.add_argument("--decoder-mntp-model", type=Path, default=None,
                    help="an already adapted folder (the output of embedkit mntp) for the MNTP arms: they train "
                         "from it and skip the MNTP stage, so one adaptation serves several runs")
    ap.add_argument("--decoder-clm-model", type=Path, default=None,
                    help="the same for the CLM arms: a folder written by embedkit mntp --objective clm")
    ap.add_argument("--decoder-negatives", type=int, default=0,
                    help="hard negatives per query for the decoder arms, mined by base MiniLM (default 0: in-batch "
                         "negatives only)")
    ap.add_argument("--decoder-prompts", action="store_true",
                    help="every decoder arm prefixes queries with the SmolLM2 recipe's NV-Embed instruction "
                         "(documents get none) and pools without the instruction tokens (exclude_prompt)")
    ap.add_argument("--decoder-no-masking", action="store_true",
                    help="decoder arms without false-negative masking (an untrained decoder's scores are near chance)")
    ap.add_argument("--skip-anchor", action="store_true")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="a local bi-encoder folder (e.g. all-mpnet-base-v2): adds an embedkit arm with listwise "
                         "distillation from its scores of the positive and mined negatives")
    ap.add_argument("--teacher-temperature", type=float, default=0.05)
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--train-pairs", type=Path, default=None,
                    help="training pairs beyond the packaged 4,000: e.g. the full train.jsonl of eval/build_debian.py "
                         "(a seeded random sample of steps x batch pairs is used)")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision for every trained arm (GPU)")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the accelerator's dense bf16 peak for the decoder MFU (989: H100/H200 SXM)")
    ap.add_argument("-o", "--output", default="runs/quality")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.batch_size = 30, 16
        args.max_corpus, args.max_queries = 2000, args.max_queries or 200
    args.decoder_arms = [a.strip() for a in args.decoder_arms.split(",") if a.strip()]
    unknown = [a for a in args.decoder_arms if a not in DECODER_ARMS]
    if unknown or not args.decoder_arms:
        ap.error(f"--decoder-arms: unknown arm(s) {', '.join(unknown) or '(none given)'}; "
                 f"choose from {', '.join(DECODER_ARMS)}")
    if args.decoder_negatives < 0:
        ap.error(f"--decoder-negatives {args.decoder_negatives}: must be 0 (in-batch negatives only) or more")
    for objective, folder in (("mntp", args.decoder_mntp_model), ("clm", args.decoder_clm_model)):
        if folder is not None:
            check_adapted_folder(ap, objective, folder, args.decoder_arms)
    args.gradcache_chunk = args.gradcache_chunk or args.batch_size
    args.anchor_batch_size = args.anchor_batch_size or args.batch_size
    args.max_corpus = args.max_corpus or None
    args.max_pairs = args.max_pairs or args.steps * args.batch_size * max(1, args.gradcache_factor)
    return args


def main() -> int:
    args = parse_args()

    import torch

    from embedkit.data.readers import write_pairs
    from embedkit.models import load_model

    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    beir = eval_split(args.max_queries, args.max_corpus, args.seed)
    pairs = train_pairs(args.max_pairs, args.train_pairs, args.seed)
    if args.train_pairs is not None:
        refuse_leaked(pairs, beir.queries.values(), args.train_pairs)
    if len(pairs) < args.max_pairs:
        log(f"note: {len(pairs)} training pairs for {args.max_pairs} wanted; the trainer repeats them (epochs)")
    pairs_path = out / "train.jsonl"
    write_pairs(pairs, pairs_path)
    log(f"data: {len(pairs)} training pairs; eval {len(beir.queries)} held-out queries x {len(beir.corpus)} docs")

    rows: dict[str, dict[str, float]] = {}

    def arm(name: str, train: Any, trained: bool = True) -> dict[str, float]:
        t = time.time()
        got = train()
        model, clock = got if isinstance(got, tuple) else (got, None)
        train_s = time.time() - t
        rows[name] = {**score(model, beir), "train_s": round(train_s, 1) if trained else 0.0}
        if clock is not None:
            rows[name].update(clock.summary())
        log(f"{name} (train {train_s:.0f} s, total {time.time() - t_start:.0f} s): {rows[name]}")
        write_outputs(out, rows, args, beir, time.time() - t_start)  # a stopped run keeps what it measured
        return rows[name]

    arm(BASE, lambda: load_model("minilm", max_seq_length=args.max_seq_length), trained=False)
    if not args.skip_anchor:
        arm(f"{ANCHOR} (batch {args.anchor_batch_size})", lambda: anchor_finetune(args, pairs, out))
    if not args.skip_embedkit:
        batch = args.batch_size * args.gradcache_factor
        cached = f", GradCache chunk {args.gradcache_chunk}" if args.gradcache_chunk < batch else ""
        arm(f"{EMBEDKIT} (batch {batch}{cached})",
            lambda: run_embedkit(embedkit_recipe(args, pairs_path, out), out / "embedkit"))
    if args.ablate:
        for i, (name, change) in enumerate(ABLATIONS.items()):
            arm(f"embedkit {name}", lambda: run_embedkit(embedkit_recipe(args, pairs_path, out, **change),
                                                         out / f"ablation-{i}"))
    if args.teacher is not None:
        arm(f"embedkit default recipe + listwise distillation from {args.teacher.name}",
            lambda: run_embedkit(embedkit_recipe(args, pairs_path, out, teacher=args.teacher), out / "teacher-kd"))
    if args.decoder:
        decoder_arms(args, pairs_path, pairs, arm)
    text = write_outputs(out, rows, args, beir, time.time() - t_start)
    print(text)
    print(f"\n(total {(time.time() - t_start) / 60:.1f} min; table in {out}/QUALITY.md, report in {out}/report/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
