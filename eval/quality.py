"""Quality proof: base model vs a sentence-transformers fine-tune vs embedkit's recipe, on held-out real data.

Data: the packaged Debian package-description sample. Training pairs come from the train split; the test queries
belong to other source-package families (never seen in training) and are retrieved from a corpus that holds the
training documents too (``--max-corpus 10000`` of the ~11k documents by default, every relevant one kept).

Every embedkit arm is a shipped recipe (``embedkit/recipes/``, or the checkout's ``recipes/``) loaded with
``--set``-style overrides, as ``embedkit train RECIPE --set ...`` would train it; the overrides are only the
benchmark's budget (steps, batch, seed, data and output paths; the recipe's own evaluation off) and its switches,
and the printed arm table names each arm's recipe and overrides. Arms (same pairs, steps, batch, seed):

1. base all-MiniLM-L6-v2 as packaged (``minilm-cpu.yaml``'s model);
2. the anchor: ``SentenceTransformerTrainer`` + ``MultipleNegativesRankingLoss`` (in-batch negatives), at
   ``minilm-cpu.yaml``'s learning rate, warm-up, weight decay, max length and temperature;
3. embedkit's default recipe, ``minilm-cpu.yaml``: hard negatives mined with positive-aware filtering,
   false-negative masking, GradCache for a larger batch (``--gradcache-factor`` x ``--batch-size`` pairs per step,
   ``--gradcache-chunk`` rows per forward pass: the memory of the anchor's batch).

``--lr``, ``--temperature``, ``--negatives``, ``--range-min``, ``--max-seq-length`` and ``--decoder-lr`` default to
the recipes' values; given, they are overrides too.

``--ablate`` adds one embedkit run per entry of ``ABLATIONS`` (one component changed each, plus everything off);
``--teacher DIR`` adds the default recipe plus listwise distillation from a local bi-encoder's scores;
``--decoder`` adds the SmolLM2-135M comparison from ``smollm2-bidirectional-lora.yaml`` (bidirectional + LoRA + mean
pooling vs causal + last token; in-batch negatives and no prompt unless ``--decoder-negatives`` /
``--decoder-prompts``).

Prints the tables (scores; each arm's recipe and overrides) and writes ``OUT/QUALITY.md``, ``OUT/quality.json`` and ``OUT/report/`` (REPORT.md, comparison.png,
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
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

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


#: ``--dataset``: the packaged Debian sample (train pairs + held-out families), or the man pages split by page name
DATASETS = ("debian", "manpages")
#: the man-pages share of page names whose pages train (the rest are the held-out test queries)
MANPAGES_TRAIN_SHARE = 0.6


def manpages_split() -> tuple[list[Any], Any]:
    """The packaged man pages as (training pairs, held-out BEIR split), split by page **name**.

    Both sections of one name (``printf.1`` and ``printf.3``) fall on the same side, so no near-duplicate page
    leaks from training into the test queries; the side is a hash of the name (no seed: every run, every machine
    gets the same split). Test queries retrieve from the whole corpus (training pages included), as the Debian split
    does."""
    import hashlib

    from embedkit.data.beir import BeirData, load_beir
    from embedkit.data.samples import sample_path
    from embedkit.data.schema import Pair

    full = load_beir(sample_path("manpages"))

    def trains(qid: str) -> bool:
        name = qid.removeprefix("q-").rsplit(".", 1)[0]
        return hashlib.sha1(name.encode()).digest()[0] < MANPAGES_TRAIN_SHARE * 256

    pairs = [Pair(query=full.queries[q], positives=[full.corpus[d]["text"] for d in sorted(rel) if rel[d] > 0],
                  id=q, dataset="manpages")
             for q, rel in sorted(full.qrels.items()) if trains(q)]
    test = {q: rel for q, rel in full.qrels.items() if not trains(q)}
    held_out = BeirData(corpus=full.corpus, queries={q: full.queries[q] for q in test}, qrels=test,
                        name="manpages-heldout", split="test", source=full.source)
    return pairs, held_out


def eval_split(max_queries: int | None, max_corpus: int | None, seed: int, dataset: str = "debian"):
    from embedkit.data.beir import load_beir
    from embedkit.data.samples import sample_path

    if dataset == "manpages":
        return manpages_split()[1].subset(max_queries, max_corpus, seed=seed)
    return load_beir(sample_path("debian-beir")).subset(max_queries, max_corpus, seed=seed)


def score(model: Any, beir: Any) -> dict[str, float]:
    from embedkit.evaluation.scoring import score_beir

    s = score_beir(model, beir, k_values=(10,))
    return {m: float(s[m]) for m in METRICS}


def score_at_dims(model: Any, beir: Any, dims: list[int]) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """(the full-size scores, as score() gives; ``{d: the scores truncated to d}``) from one encoding pass."""
    from embedkit.evaluation.scoring import score_beir_at_dims

    full = model.get_embedding_dimension()
    got = {d: {m: float(s[m]) for m in METRICS}
           for d, s in score_beir_at_dims(model, beir, [full, *dims], k_values=(10,)).items()}
    return got[full], {d: got[d] for d in dims if d != full}


def train_pairs(max_pairs: int | None, path: Path | None = None, seed: int = 42, dataset: str = "debian"):
    """The packaged sample's first ``max_pairs`` pairs, or a seeded random ``max_pairs`` of a larger ``path``.

    ``path`` is for budgets beyond the 4,000 packaged pairs, e.g. the full train split of
    ``eval/build_debian.py`` (52k pairs, sorted by package name, hence the shuffle). It must come from the same
    build as the packaged held-out queries; :func:`main` refuses a file that holds any of them.
    """
    import random

    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import sample_path

    if path is None:
        pairs = manpages_split()[0] if dataset == "manpages" else list(load_pairs(sample_path("debian-train")))
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


#: the shipped recipes the arms are built from (``embedkit train <recipe>`` trains the same)
MINILM_RECIPE, DECODER_RECIPE = "minilm-cpu.yaml", "smollm2-bidirectional-lora.yaml"


def recipe_dir() -> Path:
    """Where the shipped recipes are: ``embedkit/recipes/`` in the package, else the checkout's ``recipes/``."""
    import embedkit

    packaged = Path(embedkit.__file__).resolve().parent / "recipes"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[1] / "recipes"


class Arm(NamedTuple):
    """One arm's training setup: a shipped recipe and the ``--set`` overrides this benchmark puts on it.

    The overrides are only the benchmark's budget (steps, batch, seed, data and output paths) and its switches
    (ablations, the teacher, the decoder's attention / pooling): every other setting is the recipe's, so the
    benchmark measures what ``embedkit train`` trains.

        >>> Arm(MINILM_RECIPE, ("training.max_steps=30",)).describe()
        'minilm-cpu.yaml + training.max_steps=30'
    """

    recipe: str
    overrides: tuple[str, ...] = ()

    def load(self) -> Any:
        """The effective :class:`~embedkit.training.config.Recipe` (as ``embedkit train RECIPE --set ...``)."""
        from embedkit.training.config import load_recipe

        return load_recipe(recipe_dir() / self.recipe, sets=self.overrides)

    def describe(self) -> str:
        return self.recipe + (" + " + ", ".join(self.overrides) if self.overrides else " (as shipped)")

    def record(self, uses: str = "the recipe") -> dict[str, Any]:
        """quality.json's entry: which recipe, what of it the arm uses, and the overrides."""
        return {"recipe": self.recipe, "uses": uses, "overrides": list(self.overrides)}


def _set_option(key: str, value: Any) -> str:
    """``key=value`` as ``--set`` reads it back (YAML flow: JSON, or a plain string that reads as itself)."""
    import yaml

    if isinstance(value, str) and value.strip() == value and yaml.safe_load(value) == value:
        return f"{key}={value}"
    return f"{key}={json.dumps(value)}"


_MISSING = object()


def _dumped(dump: Any, key: str) -> Any:
    """The value at dotted ``key`` of a recipe's ``model_dump()`` (``_MISSING`` where there is none)."""
    for part in key.split("."):
        if isinstance(dump, dict) and part in dump:
            dump = dump[part]
        elif isinstance(dump, list) and part.isdigit() and int(part) < len(dump):
            dump = dump[int(part)]
        else:
            return _MISSING
    return dump


def make_arm(recipe: str, *layers: dict[str, Any]) -> Arm:
    """``recipe`` with ``layers`` of dotted-key overrides, later ones winning; a key replaces what was set below it
    (``miner: null`` drops ``miner.cache_dir``), and an override equal to the shipped value is left out."""
    wanted: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            for below in [k for k in wanted if k.startswith(key + ".")]:
                del wanted[below]
            wanted.pop(key, None)
            wanted[key] = value
    shipped = Arm(recipe).load().model_dump()
    return Arm(recipe, tuple(_set_option(k, v) for k, v in wanted.items() if _dumped(shipped, k) != v))


def budget(args: argparse.Namespace, pairs_path: Path, out: Path) -> dict[str, Any]:
    """The benchmark's budget, the same for every trained arm: steps, batch (GradCache chunks of ``--gradcache-
    chunk`` rows when the batch is larger), seed, precision, the pairs file and one mining cache for every arm (the
    corpus is embedded once by the mining model). No checkpoints, and no evaluation by the recipe: the benchmark
    scores every arm itself on its held-out split."""
    batch = args.batch_size * args.gradcache_factor
    return {"data.datasets.0.path": str(pairs_path), "miner.cache_dir": str(out / "mining-cache"),
            "training.max_steps": args.steps, "training.batch_size": batch,
            "training.gradcache_chunk_size": args.gradcache_chunk if args.gradcache_chunk < batch else None,
            "training.seed": args.seed, "training.bf16": args.bf16, "eval.beir": None, "output.save_steps": None}


def negatives(n: int) -> dict[str, Any]:
    """``n`` mined hard negatives per query; 0: in-batch negatives only (no miner)."""
    if n == 0:
        return {"data.datasets.0.max_negatives": 0, "miner": None}
    return {"data.datasets.0.max_negatives": n, "miner.num_negatives": n}


def recipe_flags(args: argparse.Namespace, lr: float | None) -> dict[str, Any]:
    """The recipe settings given on the command line (``--lr``, ``--temperature``, ...); unset: the recipe's."""
    given = {"model.max_seq_length": args.max_seq_length, "training.lr": lr,
             "losses.infonce.temperature": args.temperature, "miner.range_min": args.range_min}
    return {k: v for k, v in given.items() if v is not None}


#: online hard-negative mixing, off in the recipe: switched on, it cost 1.4 nDCG@10 points in the ablation
MIXING: dict[str, Any] = {"num_mixed": 8, "hardest_k": 4, "mix_query": False}
NO_GRADCACHE = {"training.gradcache_chunk_size": None}

#: --ablate: one embedkit run per entry, with these overrides of the default recipe
ABLATIONS: dict[str, dict[str, Any]] = {
    "without mined hard negatives": negatives(0),
    "without false-negative masking": {"losses.infonce.masking": None},
    "masking margin -0.1 (also masks just below the positive)": {"losses.infonce.masking.margin": -0.1},
    "with hard-negative mixing (8 mixes of the 4 hardest)": {"losses.infonce.mixing": MIXING},
    "with mixing, query-negative mixes too": {"losses.infonce.mixing": {**MIXING, "mix_query": True}},
    "plain in-batch InfoNCE (no mined negatives, masking, mixing or GradCache)": {
        **negatives(0), "losses.infonce.masking": None, "losses.infonce.mixing": None, **NO_GRADCACHE},
}


#: --ablate-batches (batches and negatives that evolve, issue #31): one default-recipe run per entry
MATRYOSHKA_DIMS = [384, 256, 128, 64]
BATCH_ABLATIONS: dict[str, dict[str, Any]] = {
    "with B3 cluster batches (p 30, m 100)": {"data.batching": "b3"},
    "with negatives re-mined every third of the run": {"miner.refresh_every_steps": "third"},
    "with Matryoshka 384/256/128/64": {"losses.matryoshka": {"dims": MATRYOSHKA_DIMS}},
    "with the spread-out regulariser (weight 1)": {"losses.spread_out": {"weight": 1.0}},
    "with hardness weighting (strength 5)": {"losses.infonce.hardness": {"strength": 5.0}},
}
#: --combine KEYS: one run with several BATCH_ABLATIONS changes at once (short key -> its entry)
BATCH_KEYS = dict(zip(("b3", "refresh", "matryoshka", "spread-out", "hardness"), BATCH_ABLATIONS))


def refresh_steps(change: dict[str, Any], steps: int) -> dict[str, Any]:
    """``change`` with a refresh of "third" made ``steps // 3`` (two refreshes in the run, whatever its length)."""
    refresh = max(1, steps // 3)
    return {k: refresh if v == "third" else v for k, v in change.items()}


def combine_keys(keys: str) -> list[str]:
    """``"b3, refresh"`` -> ``["b3", "refresh"]``; ``ValueError`` naming what is not a key of ``BATCH_KEYS``."""
    picked = [k.strip() for k in keys.split(",") if k.strip()]
    unknown = [k for k in picked if k not in BATCH_KEYS]
    if unknown or not picked:
        raise ValueError(f"unknown key(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(BATCH_KEYS)}")
    return picked


def combined_batches(keys: str, steps: int) -> tuple[str, dict[str, Any]]:
    """``--combine b3,refresh`` -> (the arm's name, the merged changes); a refresh "third" becomes steps // 3."""
    picked = combine_keys(keys)
    change: dict[str, Any] = {}
    for k in picked:
        change.update(BATCH_ABLATIONS[BATCH_KEYS[k]])
    return "embedkit combined: " + " + ".join(picked), refresh_steps(change, steps)


def embedkit_arm(args: argparse.Namespace, pairs_path: Path, out: Path, change: dict[str, Any] | None = None,
                 teacher: Path | None = None) -> Arm:
    """``recipes/minilm-cpu.yaml`` at this script's budget; ``change``: an entry of ``ABLATIONS``; ``teacher``: adds
    listwise distillation from that bi-encoder's scores of the positive and the mined negatives."""
    change = dict(change or {})
    if isinstance(change.get("losses.infonce.mixing"), dict):
        change["losses.infonce.mixing.seed"] = args.seed
    layers = [budget(args, pairs_path, out), recipe_flags(args, args.lr),
              {} if args.negatives is None else negatives(args.negatives), change]
    arm = make_arm(MINILM_RECIPE, *layers)
    if teacher is None:
        return arm
    recipe = arm.load()
    if recipe.miner is None:
        raise SystemExit("quality.py: the distillation arm needs mined negatives (the teacher scores them)")
    return make_arm(MINILM_RECIPE, *layers, {
        "miner.teacher": str(teacher), "miner.teacher_type": "bi",
        "losses.listwise": {"weight": args.kd_weight, "temperature": recipe.losses.infonce.temperature,
                            "teacher_temperature": args.teacher_temperature}})


#: the shipped distillation recipe (teacher -> mine -> teacher scores -> listwise distillation)
DISTILL_RECIPE = "minilm-distill.yaml"

#: --distill-ablate: one distillation run per entry (the first arm's teacher reused), one component changed each
DISTILL_ABLATIONS: dict[str, dict[str, Any]] = {
    "distill without the 0.1 x InfoNCE term": {"losses.infonce.weight": 0.0},
    "distill without teacher masking in InfoNCE": {"losses.infonce.teacher_mask_ratio": None},
    "distill, InfoNCE only (teacher scores unused by the loss)": {"losses.listwise": None,
                                                                  "losses.infonce.weight": 1.0},
    "distill with Margin-MSE instead of listwise": {"losses.listwise": None, "losses.margin_mse": {"weight": 1.0}},
    "distill with the teacher's false-negative filter (0.9)": {"miner.teacher_max_score_ratio": 0.9},
}


def distill_arm(args: argparse.Namespace, pairs_path: Path, out: Path, change: dict[str, Any] | None = None,
                teacher: Path | None = None) -> Arm:
    """``recipes/minilm-distill.yaml`` at this script's budget (the default recipe's steps, batch and GradCache
    chunks); ``--teacher-steps`` sets its teacher's training steps; ``teacher``: reuse that trained teacher folder
    (``teacher.path``) instead of training one; ``change``: an entry of ``DISTILL_ABLATIONS``."""
    layers: list[dict[str, Any]] = [budget(args, pairs_path, out), recipe_flags(args, args.lr)]
    if args.teacher_steps is not None:
        layers.append({"teacher.steps": args.teacher_steps})
    if args.teacher_loss is not None:
        layers.append({"teacher.loss": args.teacher_loss})
    if args.teacher_lr is not None:
        layers.append({"teacher.lr": args.teacher_lr})
    if args.distill_candidates is not None:
        layers.append(negatives(args.distill_candidates))
    if teacher is not None:
        layers.append({"teacher.path": str(teacher)})
    layers.append(dict(change or {}))
    return make_arm(DISTILL_RECIPE, *layers)


def self_distill_arm(args: argparse.Namespace, pairs_path: Path, out: Path, teacher: Path) -> Arm:
    """``recipes/minilm-distill.yaml`` with a **bi-encoder** teacher instead of its cross-encoder: ``teacher`` is the
    default recipe arm's trained model (no teacher is trained; ``miner.teacher_type: bi`` scores the candidates with
    its cosine), at ``--bi-teacher-temperature`` (cosines span a far smaller range than cross-encoder logits)."""
    layers: list[dict[str, Any]] = [budget(args, pairs_path, out), recipe_flags(args, args.lr)]
    if args.distill_candidates is not None:
        layers.append(negatives(args.distill_candidates))
    layers.append({"teacher": None, "miner.teacher": str(teacher), "miner.teacher_type": "bi",
                   "losses.listwise.teacher_temperature": args.bi_teacher_temperature})
    return make_arm(DISTILL_RECIPE, *layers)


def teacher_rerank(teacher: Path, beir: Any, top_k: int = 20) -> dict[str, float]:
    """The teacher's own quality: nDCG@10 of its rerank of the base model's top ``top_k`` on the held-out split."""
    from embedkit.evaluation.rerank import rerank_beir
    from embedkit.mining.teacher import Teacher
    from embedkit.models import load_model

    res = rerank_beir(load_model("minilm"), Teacher.load(teacher, "cross"), beir, top_k=top_k)
    return {m: float(res.rerank[m]) for m in METRICS}


def anchor_settings(args: argparse.Namespace, recipe: Any) -> dict[str, Any]:
    """The anchor's training settings: the default recipe's model, learning rate, warm-up, weight decay, length and
    temperature (``recipe``: the effective MiniLM recipe), at the benchmark's steps, seed and ``--anchor-batch-size``."""
    t = recipe.training
    return {"model": recipe.model.name, "max_seq_length": recipe.model.max_seq_length,
            "temperature": recipe.losses.infonce.temperature, "batch_size": args.anchor_batch_size, "lr": t.lr,
            "steps": args.steps, "warmup_ratio": t.warmup_ratio, "weight_decay": t.weight_decay, "seed": args.seed}


def anchor_finetune(args: argparse.Namespace, recipe: Any, pairs: list, out: Path, mined: bool = False):
    """What a user would otherwise do: sentence-transformers' trainer with MultipleNegativesRankingLoss, at the
    default recipe's settings (:func:`anchor_settings`).

    ``mined``: the strongest plain sentence-transformers recipe instead -- the same MNRL on (anchor, positive,
    negative...) rows whose negatives its own ``util.mine_hard_negatives`` mined with the base model, in the default
    recipe's window (``miner.range_min`` / ``range_max``), number of negatives and TopK-PercPos margin
    (``relative_margin = 1 - miner.max_score_ratio``)."""
    import torch
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from embedkit.models import resolve_model_path

    s = anchor_settings(args, recipe)
    model = SentenceTransformer(resolve_model_path(s["model"]))
    model.max_seq_length = s["max_seq_length"]
    clock = TrainClock()
    ds = Dataset.from_dict({"anchor": [p.query for p in pairs], "positive": [p.positives[0] for p in pairs]})
    if mined:
        ds = st_mined_rows(model, ds, recipe)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "st-tmp"), per_device_train_batch_size=s["batch_size"], learning_rate=s["lr"],
        max_steps=s["steps"], warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"], seed=s["seed"],
        data_seed=s["seed"], save_strategy="no", logging_steps=max(1, s["steps"] // 5), report_to=[],
        batch_sampler="no_duplicates", dataloader_drop_last=True, use_cpu=not torch.cuda.is_available(),
        bf16=args.bf16,
    )
    loss = MultipleNegativesRankingLoss(model, scale=1 / s["temperature"])
    SentenceTransformerTrainer(model=model, args=targs, train_dataset=ds, loss=loss, callbacks=[clock]).train()
    return model, clock


def st_mined_settings(recipe: Any) -> dict[str, Any]:
    """``util.mine_hard_negatives`` arguments equal to the default recipe's miner (window, count, margin)."""
    m = recipe.miner
    return {"range_min": m.range_min, "range_max": m.range_max, "num_negatives": m.num_negatives,
            "relative_margin": round(1 - m.max_score_ratio, 6), "sampling_strategy": "top"}


def st_mined_rows(model: Any, ds: Any, recipe: Any) -> Any:
    """(anchor, positive, negative_1..n) rows mined by sentence-transformers itself (:func:`st_mined_settings`)."""
    from sentence_transformers import util

    rows = util.mine_hard_negatives(ds, model, **st_mined_settings(recipe), output_format="n-tuple",
                                    batch_size=64, verbose=False)
    log(f"sentence-transformers mining: {len(rows)} of {len(ds)} pairs kept a negative")
    return rows


def run_embedkit(arm: Arm, out: Path):
    """Train one arm's recipe; returns the trained model and the clock of its training loop."""
    from embedkit.models import load_model
    from embedkit.training.runner import run_recipe

    clock = TrainClock()
    result = run_recipe(arm.load(), out, overwrite=True, callbacks=[clock])
    return load_model(str(result.final_dir)), clock


#: The fine-tuned decoder arms ``--decoder-arms`` picks from: key -> (label, overrides of
#: ``recipes/smollm2-bidirectional-lora.yaml``, adaptation stage). All share that recipe's model (SmolLM2-135M, LoRA),
#: losses and learning rate at the benchmark's budget (:func:`decoder_arm`); the default pair is the issue's
#: comparison, the others split it into its two changes (attention, pooling) and try latent-attention pooling.
CAUSAL_LAST = {"model.bidirectional": False, "model.pooling": "last"}
CAUSAL_MEAN = {"model.bidirectional": False, "model.pooling": "mean"}
BIDIR_MEAN = {"model.bidirectional": True, "model.pooling": "mean"}
BIDIR_LAST = {"model.bidirectional": True, "model.pooling": "last"}
BIDIR_LATENT = {"model.bidirectional": True, "model.pooling": "latent_attention",
                "model.latent_attention": {"num_latents": 128, "num_heads": 8}}
DECODER_ARMS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "causal-last": ("smollm2 causal + last-token, fine-tuned", CAUSAL_LAST, None),
    "bidir-mean": ("smollm2 bidirectional + LoRA + mean, fine-tuned", BIDIR_MEAN, None),
    "causal-mean": ("smollm2 causal + LoRA + mean, fine-tuned", CAUSAL_MEAN, None),
    "bidir-last": ("smollm2 bidirectional + LoRA + last-token, fine-tuned", BIDIR_LAST, None),
    "bidir-latent": ("smollm2 bidirectional + LoRA + latent attention, fine-tuned", BIDIR_LATENT, None),
    # LLM2Vec's order: MNTP (``--decoder-mntp-steps`` of masked next-token prediction, LoRA merged), then the same
    # contrastive run as bidir-mean; its train s counts both stages (only the second with --decoder-mntp-model)
    "bidir-mntp-mean": ("smollm2 MNTP + bidirectional + LoRA + mean, fine-tuned", BIDIR_MEAN, "mntp"),
    # a probe of what MNTP taught: the adapted weights run causally (as causal-mean). If the gain survived without
    # bidirectional attention, it would be domain adaptation on the pairs' texts rather than the attention switch
    "causal-mntp-mean": ("smollm2 MNTP weights, causal + LoRA + mean, fine-tuned", CAUSAL_MEAN, "mntp"),
    # NV-Embed's pooling on the adapted model: does latent attention pay once the attention switch is adapted?
    "bidir-mntp-latent": ("smollm2 MNTP + bidirectional + LoRA + latent attention, fine-tuned", BIDIR_LATENT, "mntp"),
    # the control for the MNTP arms: the same number of steps on the same texts, as ordinary causal-LM training
    # (``embedkit mntp --objective clm``), before the causal arms' contrastive run -- so that both sides of the
    # comparison have read the domain's texts, and only the attention differs
    "causal-clm-last": ("smollm2 CLM + causal + LoRA + last-token, fine-tuned", CAUSAL_LAST, "clm"),
    "causal-clm-mean": ("smollm2 CLM + causal + LoRA + mean, fine-tuned", CAUSAL_MEAN, "clm"),
}
#: the untrained decoder arms (``--decoder-skip-base`` leaves them out): the recipe's model without its LoRA adapter
UNTRAINED_DECODER_ARMS = (("smollm2 causal + last-token (base)", CAUSAL_LAST),
                          ("smollm2 bidirectional + mean (base)", BIDIR_MEAN))
#: the arms whose model is first adapted on the pairs' texts, by objective (``embedkit mntp --objective``)
ADAPTED_ARMS = {objective: tuple(k for k, (_, _, a) in DECODER_ARMS.items() if a == objective)
                for objective in ("mntp", "clm")}
MNTP_ARMS, CLM_ARMS = ADAPTED_ARMS["mntp"], ADAPTED_ARMS["clm"]
DEFAULT_DECODER_ARMS = ("causal-last", "bidir-mean")


def decoder_switches(args: argparse.Namespace) -> dict[str, Any]:
    """What every decoder arm, trained or not, changes of the recipe's model: without ``--decoder-prompts``, no
    query instruction (the recipe's NV-Embed instruction, pooled without its tokens, with it)."""
    return {} if args.decoder_prompts else {"model.prompts": {"style": "none"}, "model.exclude_prompt": False}


def decoder_arm(args: argparse.Namespace, pairs_path: Path, out: Path, switches: dict[str, Any]) -> Arm:
    """One fine-tuned decoder arm: ``recipes/smollm2-bidirectional-lora.yaml`` at the benchmark's budget, with
    ``switches`` (attention, pooling, an adapted model folder).

    Every arm gets the same recipe: the comparison is about attention and pooling. ``--decoder-negatives N`` (default
    0: in-batch negatives only) mines N hard negatives per query with the recipe's miner (base MiniLM: mining with
    the decoder itself would embed the corpus with a 135M model on every arm, and an untrained decoder ranks near
    chance), and one mining serves all arms through the shared cache. ``--decoder-no-masking`` turns false-negative
    masking off: it trusts the model's own scores, which for an untrained decoder are near chance.
    """
    masking = {"losses.infonce.masking": None} if args.decoder_no_masking else {}
    return make_arm(DECODER_RECIPE, budget(args, pairs_path, out), recipe_flags(args, args.decoder_lr),
                    negatives(args.decoder_negatives), masking, decoder_switches(args), switches)


def decoder_arms(args: argparse.Namespace, pairs_path: Path, pairs: list, arm: Any) -> None:
    """SmolLM2-135M: bidirectional + LoRA + mean pooling vs causal + last-token pooling (same budget).

    ``arm(name, train, trained=True, setup=None)`` scores and records each model as soon as it exists. Fine-tuned
    arms also get ``tokens_per_s`` (real, untruncated-to-padding tokens of the pairs trained on, over the steady
    training loop) -- each query (with its ``--decoder-prompts`` instruction), its positive and its
    ``--decoder-negatives`` mined negatives, see :func:`tokens_per_example`
    -- and, on a GPU with ``--bf16``, ``mfu``: 6 x parameters x tokens/s over ``--peak-tflops`` (attention FLOPs
    ignored, LoRA's frozen weights counted as trained -- the usual convention, an upper bound on the work done).
    """
    from embedkit.models import load_model

    for label, switches in () if args.decoder_skip_base else UNTRAINED_DECODER_ARMS:
        setup = make_arm(DECODER_RECIPE, recipe_flags(args, None), decoder_switches(args), switches,
                         {"model.lora": None})
        arm(label, lambda setup=setup: load_model(setup.load().model), trained=False, setup=setup.record("model"))
    out = Path(args.output)
    # the recipe's model and learning rate before the arms' switches: what an adaptation starts from
    base = make_arm(DECODER_RECIPE, recipe_flags(args, args.decoder_lr), decoder_switches(args)).load()
    per_example, params = 0.0, 0
    # one adaptation stage per objective, before the run's first arm that needs it, serves all its arms (none when
    # an adapted folder is given)
    given = {"mntp": args.decoder_mntp_model, "clm": args.decoder_clm_model}
    first = {objective: next((k for k in args.decoder_arms if k in arms), None) if given[objective] is None else None
             for objective, arms in ADAPTED_ARMS.items()}
    for key in args.decoder_arms:
        label, switches, objective = DECODER_ARMS[key]
        slug = label.split(",")[0].replace(" ", "-").replace("+", "")
        adapt = objective if objective and first[objective] == key else None
        if objective:
            switches = {**switches, "model.name": str(given[objective] or out / f"smollm2-{objective}")}
        setup = decoder_arm(args, pairs_path, out, switches)

        def train(setup=setup, slug=slug, adapt=adapt, folder=switches.get("model.name")):
            if adapt:
                run_decoder_adaptation(mntp_config(args, pairs_path, base, adapt), Path(folder))
            return run_embedkit(setup, out / slug)

        row = arm(label, train, setup=setup.record())
        if row.get("steps_per_s"):
            if not per_example:
                per_example, params = decoder_work(base.model, args.decoder_negatives, pairs)
            tok_s = row["steps_per_s"] * per_example * args.batch_size * max(1, args.gradcache_factor)
            row["tokens_per_s"] = round(tok_s)
            if args.bf16 and args.peak_tflops:
                row["mfu"] = round(6 * params * tok_s / (args.peak_tflops * 1e12), 4)
            log(f"{label}: {row['steps_per_s']:.2f} steps/s, {tok_s:,.0f} tokens/s"
                + (f", MFU {100 * row['mfu']:.1f} %" if "mfu" in row else ""))


def mntp_config(args: argparse.Namespace, pairs_path: Path, recipe: Any, objective: str) -> Any:
    """MNTP (or its CLM control) on the training pairs' texts before an adapted arm: ``--decoder-mntp-steps`` steps
    at the benchmark's batch and seed, from the decoder recipe's model with its LoRA, length and learning rate."""
    from embedkit.training.mntp import MNTPConfig

    return MNTPConfig(model=recipe.model.name, data=str(pairs_path), steps=args.decoder_mntp_steps,
                      batch_size=args.batch_size, lr=recipe.training.lr, max_seq_length=recipe.model.max_seq_length,
                      seed=args.seed, bf16=args.bf16, lora=recipe.model.lora.model_dump(), objective=objective)


def run_decoder_adaptation(cfg: Any, out: Path) -> None:
    """Run ``embedkit mntp`` with ``cfg`` (:func:`mntp_config`); the merged model goes to ``out``."""
    from embedkit.training.mntp import run_mntp, summary_line

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


def query_prompt(model_cfg: Any) -> str:
    """The query prefix a model config gives (its ``prompts``: a style, its instruction, or an explicit query)."""
    from embedkit.models.prompts import build_prompts

    p = model_cfg.prompts
    return p.query if p.query is not None else build_prompts(p.style, p.instruction)["query"]


def decoder_work(model_cfg: Any, negatives: int, pairs: list) -> tuple[float, int]:
    """(:func:`tokens_per_example` at the arm's length and query prompt, the decoder's parameters) for the
    throughput figures."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from embedkit.models import resolve_model_path

    path = resolve_model_path(model_cfg.name)
    per_example = tokens_per_example(AutoTokenizer.from_pretrained(path), pairs, model_cfg.max_seq_length,
                                     negatives, query_prompt=query_prompt(model_cfg))
    import torch

    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModel.from_config(AutoConfig.from_pretrained(path)).parameters())
    return per_example, n


def table(rows: dict[str, dict[str, float]], base: str, ref: str | None = None, ref2: str | None = None) -> str:
    """Markdown table; deltas in nDCG@10 points against ``base`` (and ``ref`` / ``ref2`` when given), and each
    arm's wall time (training, mining and teacher included) as a multiple of ``ref``'s."""
    head = ("| model | nDCG@10 | Recall@10 | MRR@10 | Δ vs base |" + (" Δ vs ST |" if ref else "")
            + (" Δ vs ST mined |" if ref2 else "") + " train s |" + (" × ST time |" if ref else ""))
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['mrr@10']:.4f}"]
        cells.append(f"{100 * (r['ndcg@10'] - rows[base]['ndcg@10']):+.2f}" if base in rows else "")
        for other in (o for o in (ref, ref2) if o):
            cells.append(f"{100 * (r['ndcg@10'] - rows[other]['ndcg@10']):+.2f}"
                         if other in rows and name != base else "")
        cells.append(f"{r['train_s']:.0f}" if r.get("train_s") else "")
        if ref:
            ref_s = rows.get(ref, {}).get("train_s")
            cells.append(f"{r['train_s'] / ref_s:.2f}" if r.get("train_s") and ref_s else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


BASE, ANCHOR, EMBEDKIT = "base all-MiniLM-L6-v2", "sentence-transformers MNRL fine-tune", "embedkit default recipe"
DISTILL = "embedkit distill recipe (in-house cross-encoder teacher, listwise KD)"
SELF_DISTILL = "embedkit distill recipe, teacher = the default recipe's model (bi-encoder)"


class TeacherRows(NamedTuple):
    """The teacher's row: scores of its rerank (:func:`teacher_rerank`) instead of an encoder to score."""

    scores: dict[str, float]


#: the strongest plain sentence-transformers recipe: MNRL on negatives from its own util.mine_hard_negatives
ANCHOR_MINED = "sentence-transformers MNRL on its own mined negatives"


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The command-line settings as JSON-ready values (paths such as ``--teacher`` become strings)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}


def arm_table(setups: dict[str, dict[str, Any]]) -> str:
    """Markdown table: the recipe each arm is built from, what of it the arm uses, and the overrides on it."""
    lines = ["| arm | recipe | overrides |", "|---|---|---|"]
    for name, s in setups.items():
        overrides = ", ".join(f"`{o}`" for o in s["overrides"]) or "none"
        lines.append(f"| {name} | {s['recipe']} ({s['uses']}) | {overrides} |")
    return "\n".join(lines)


def write_outputs(out: Path, rows: dict[str, dict[str, float]], setups: dict[str, dict[str, Any]],
                  args: argparse.Namespace, beir: Any, elapsed: float) -> str:
    """quality.json + QUALITY.md (the tables) + report/REPORT.md and comparison.png (embedkit's eval report).

    ``setups``: each arm's recipe and overrides (:meth:`Arm.record`). Returns the score and arm tables."""
    from datetime import datetime, timezone

    from embedkit.evaluation.report import write_report
    from embedkit.evaluation.runner import CheckpointInfo, EvalResults, TaskScore

    ref = next((name for name in rows if name.startswith(ANCHOR)), None)
    ref2 = next((name for name in rows if name.startswith(ANCHOR_MINED)), None)
    text = f"{table(rows, BASE, ref, ref2)}\n\nrecipes ({recipe_dir()}):\n\n{arm_table(setups)}"
    settings = run_settings(args)
    data = f"{len(beir.queries)} held-out queries x {len(beir.corpus)} documents"
    (out / "quality.json").write_text(json.dumps({"settings": settings, "data": data, "elapsed_s": round(elapsed),
                                                  "recipes": str(recipe_dir()), "arms": setups, "scores": rows},
                                                 indent=2))
    (out / "QUALITY.md").write_text(f"# Quality comparison\n\n{data}; {elapsed / 60:.1f} min in all.\n\n"
                                    f"settings: `{json.dumps(settings)}`\n\n{text}\n")
    task = {"name": f"{args.dataset}-heldout", "type": "Retrieval", "main_score": "ndcg_at_10", "source": beir.source or "",
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
    # recipe settings: unset, each arm trains with its recipe's (set, they are overrides on every recipe)
    ap.add_argument("--negatives", type=int, default=None,
                    help=f"mined hard negatives per query for embedkit (default: {MINILM_RECIPE}'s)")
    ap.add_argument("--range-min", type=int, default=None, help="miner.range_min (default: the recipes')")
    ap.add_argument("--lr", type=float, default=None,
                    help=f"embedkit's and the anchor's learning rate (default: {MINILM_RECIPE}'s)")
    ap.add_argument("--decoder-lr", type=float, default=None, help=f"default: {DECODER_RECIPE}'s")
    ap.add_argument("--temperature", type=float, default=None,
                    help="InfoNCE / MNRL temperature (default: the recipes')")
    ap.add_argument("--max-seq-length", type=int, default=None, help="default: the recipes'")
    ap.add_argument("--max-pairs", type=int, default=None)
    ap.add_argument("--max-queries", type=int, default=None, help="held-out queries (default: all 400)")
    ap.add_argument("--max-corpus", type=int, default=10_000, help="documents to retrieve from (0: all ~11k)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablate", action="store_true", help="also run embedkit once per entry of ABLATIONS")
    ap.add_argument("--ablate-batches", action="store_true",
                    help="also run embedkit once per entry of BATCH_ABLATIONS (B3, re-mining, Matryoshka, "
                         "spread-out, hardness)")
    ap.add_argument("--combine", default=None, metavar="KEYS",
                    help="also one embedkit run with several --ablate-batches changes together, e.g. b3,refresh "
                         "(keys: b3, refresh, matryoshka, spread-out, hardness)")
    ap.add_argument("--dims", default=None,
                    help="e.g. 256,128,64: also score the base, default and Matryoshka arms truncated to each")
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
                    help=f"every decoder arm keeps {DECODER_RECIPE}'s prompts (its NV-Embed query instruction, "
                         "pooled without the instruction tokens); without it, no prompt")
    ap.add_argument("--decoder-no-masking", action="store_true",
                    help="decoder arms without false-negative masking (an untrained decoder's scores are near chance)")
    ap.add_argument("--skip-anchor", action="store_true")
    ap.add_argument("--st-mined", action="store_true",
                    help="also the strongest plain sentence-transformers arm: MNRL on negatives mined by its own "
                         "util.mine_hard_negatives with the default recipe's window, count and TopK-PercPos margin")
    ap.add_argument("--dataset", choices=DATASETS, default="debian",
                    help="debian: the packaged Debian sample; manpages: the packaged man pages, split by page name "
                         f"({MANPAGES_TRAIN_SHARE:.0%} of names train, the rest are held-out test queries)")
    ap.add_argument("--teacher", type=Path, default=None,
                    help="a local bi-encoder folder (e.g. all-mpnet-base-v2): adds an embedkit arm with listwise "
                         "distillation from its scores of the positive and mined negatives")
    ap.add_argument("--teacher-temperature", type=float, default=0.05)
    ap.add_argument("--distill", action="store_true",
                    help=f"also {DISTILL_RECIPE} at the same budget (its teacher trained in-house, then the teacher's "
                         "own rerank score of the base model's top 20)")
    ap.add_argument("--distill-ablate", action="store_true",
                    help="--distill plus one run per entry of DISTILL_ABLATIONS (the first run's teacher reused)")
    ap.add_argument("--distill-teacher", type=Path, default=None,
                    help="a trained teacher folder for the distillation arms (teacher.path: none is trained)")
    ap.add_argument("--self-distill", action="store_true",
                    help=f"also {DISTILL_RECIPE} with the default recipe arm's trained model as a bi-encoder teacher")
    ap.add_argument("--bi-teacher-temperature", type=float, default=0.05,
                    help="--self-distill: losses.listwise.teacher_temperature for the bi-encoder teacher's cosines")
    ap.add_argument("--distill-candidates", type=int, default=None,
                    help=f"teacher-scored candidates per query for the distillation arms (default: {DISTILL_RECIPE}'s)")
    ap.add_argument("--teacher-steps", type=int, default=None, help=f"teacher.steps (default: {DISTILL_RECIPE}'s)")
    ap.add_argument("--teacher-loss", choices=["bce", "listnet", "lambda"], default=None,
                    help=f"teacher.loss (default: {DISTILL_RECIPE}'s)")
    ap.add_argument("--teacher-lr", type=float, default=None, help=f"teacher.lr (default: {DISTILL_RECIPE}'s)")
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
    if args.dataset != "debian" and args.train_pairs is not None:
        ap.error("--train-pairs extends the Debian sample only; leave it out with --dataset manpages")
    args.decoder_arms = [a.strip() for a in args.decoder_arms.split(",") if a.strip()]
    unknown = [a for a in args.decoder_arms if a not in DECODER_ARMS]
    if unknown or not args.decoder_arms:
        ap.error(f"--decoder-arms: unknown arm(s) {', '.join(unknown) or '(none given)'}; "
                 f"choose from {', '.join(DECODER_ARMS)}")
    if args.combine is not None:
        try:
            combine_keys(args.combine)
        except ValueError as exc:
            ap.error(f"--combine: {exc}")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from embedkit.data.readers import write_pairs
    from embedkit.models import load_model

    torch.manual_seed(args.seed)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    beir = eval_split(args.max_queries, args.max_corpus, args.seed, args.dataset)
    pairs = train_pairs(args.max_pairs, args.train_pairs, args.seed, args.dataset)
    if args.train_pairs is not None:
        refuse_leaked(pairs, beir.queries.values(), args.train_pairs)
    if len(pairs) < args.max_pairs:
        log(f"note: {len(pairs)} training pairs for {args.max_pairs} wanted; the trainer repeats them (epochs)")
    pairs_path = out / "train.jsonl"
    write_pairs(pairs, pairs_path)
    log(f"data: {len(pairs)} training pairs; eval {len(beir.queries)} held-out queries x {len(beir.corpus)} docs")

    rows: dict[str, dict[str, float]] = {}
    setups: dict[str, dict[str, Any]] = {}
    dims = [int(d) for d in args.dims.split(",") if d.strip()] if args.dims else []

    def arm(name: str, train: Any, trained: bool = True, setup: dict[str, Any] | None = None) -> dict[str, float]:
        if setup is not None:
            setups[name] = setup
        t = time.time()
        got = train()
        model, clock = got if isinstance(got, tuple) else (got, None)
        train_s = time.time() - t
        curve: dict[int, dict[str, float]] = {}
        if isinstance(model, TeacherRows):
            scores = model.scores
        elif dims and (name == BASE or name.startswith(EMBEDKIT + " (") or "matryoshka" in name.lower()):
            scores, curve = score_at_dims(model, beir, dims)  # the full size and each truncation, one encoding
        else:
            scores = score(model, beir)
        rows[name] = {**scores, "train_s": round(train_s, 1) if trained else 0.0}
        for d, at_d in curve.items():  # the same model truncated to d dimensions (re-normalised, cosine)
            rows[f"{name} @{d}"] = {**at_d, "train_s": 0.0}
        if clock is not None:
            rows[name].update(clock.summary())
        log(f"{name} (train {train_s:.0f} s, total {time.time() - t_start:.0f} s): {rows[name]}")
        write_outputs(out, rows, setups, args, beir, time.time() - t_start)  # a stopped run keeps what it measured
        return rows[name]

    minilm = make_arm(MINILM_RECIPE, recipe_flags(args, args.lr))  # the model and settings the anchor shares
    shared = minilm.load()
    arm(BASE, lambda: load_model(shared.model), trained=False, setup=minilm.record("model"))
    if not args.skip_anchor:
        arm(f"{ANCHOR} (batch {args.anchor_batch_size})", lambda: anchor_finetune(args, shared, pairs, out),
            setup=minilm.record("model, lr, warm-up, weight decay, temperature; sentence-transformers' trainer"))
    if args.st_mined:
        arm(f"{ANCHOR_MINED} (batch {args.anchor_batch_size})",
            lambda: anchor_finetune(args, shared, pairs, out, mined=True),
            setup=minilm.record("model, lr, warm-up, weight decay, temperature, miner window / count / margin; "
                                "sentence-transformers' util.mine_hard_negatives and trainer"))
    # every embedkit arm is built (and checked) before the first one trains
    trained: list[tuple[str, Arm, str]] = []
    if not args.skip_embedkit:
        batch = args.batch_size * args.gradcache_factor
        cached = f", GradCache chunk {args.gradcache_chunk}" if args.gradcache_chunk < batch else ""
        trained.append((f"{EMBEDKIT} (batch {batch}{cached})", embedkit_arm(args, pairs_path, out), "embedkit"))
    if args.ablate:
        trained += [(f"embedkit {name}", embedkit_arm(args, pairs_path, out, change), f"ablation-{i}")
                    for i, (name, change) in enumerate(ABLATIONS.items())]
    if args.ablate_batches:
        refresh = max(1, args.steps // 3)  # as refresh_steps() sets it
        trained += [(f"embedkit {name}".replace("every third of the run", f"every {refresh} steps"),
                     embedkit_arm(args, pairs_path, out, refresh_steps(change, args.steps)),
                     f"batches-{i}") for i, (name, change) in enumerate(BATCH_ABLATIONS.items())]
    if args.combine:
        name, change = combined_batches(args.combine, args.steps)
        trained.append((name, embedkit_arm(args, pairs_path, out, change), "combined"))
    if args.teacher is not None:
        trained.append((f"{EMBEDKIT} + listwise distillation from {args.teacher.name}",
                        embedkit_arm(args, pairs_path, out, teacher=args.teacher), "teacher-kd"))
    for name, setup, folder in trained:
        arm(name, lambda setup=setup, folder=folder: run_embedkit(setup, out / folder), setup=setup.record())
    if args.self_distill:
        if args.skip_embedkit:
            raise SystemExit("quality.py: --self-distill distils from the default recipe arm: drop --skip-embedkit")
        setup = self_distill_arm(args, pairs_path, out, out / "embedkit" / "final")
        arm(SELF_DISTILL, lambda: run_embedkit(setup, out / "self-distill"), setup=setup.record())
    if args.distill or args.distill_ablate:
        given = args.distill_teacher
        first = distill_arm(args, pairs_path, out, teacher=given)
        arm(DISTILL, lambda: run_embedkit(first, out / "distill"), setup=first.record())
        teacher = given or out / "distill" / "teacher"
        arm(f"teacher: its rerank of the base model's top 20 ({teacher.name})",
            lambda: (TeacherRows(teacher_rerank(teacher, beir)), None),
            trained=False, setup=first.record("the teacher the distillation arm trained (or was given)"))
        for i, (name, change) in enumerate(DISTILL_ABLATIONS.items() if args.distill_ablate else ()):
            setup = distill_arm(args, pairs_path, out, change, teacher=teacher)
            arm(name, lambda setup=setup, i=i: run_embedkit(setup, out / f"distill-ablation-{i}"),
                setup=setup.record())
    if args.decoder:
        decoder_arms(args, pairs_path, pairs, arm)
    text = write_outputs(out, rows, setups, args, beir, time.time() - t_start)
    print(text)
    print(f"\n(total {(time.time() - t_start) / 60:.1f} min; table in {out}/QUALITY.md, report in {out}/report/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
