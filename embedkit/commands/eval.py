"""``embedkit eval``: evaluate checkpoints with mteb on hub tasks or local BEIR folders / STS files.

Writes, atomically, into OUT: mteb's result JSONs (``results/<model>/<revision>/<task>.json``, one distinct model
name and revision per checkpoint), ``REPORT.md`` (task x checkpoint table with deltas against the first
checkpoint; nDCG@10 / Recall@10 / MRR@10 for retrieval), ``comparison.png`` and ``summary.json``. Every
checkpoint is checked (folder, config, adapter, safetensors headers) and every local data folder read before the
first checkpoint is evaluated: a bad second path costs seconds, not the baseline's evaluation.

Examples::

    embedkit eval minilm runs/ckpt-500 --beir data/heldout_beir -o eval-out
    embedkit eval runs/final --sts data/sts_dev.tsv --tasks STSBenchmark -o eval-out --overwrite
    embedkit eval minilm --manpages -o eval-out          # the packaged Linux man-pages sample
    embedkit eval minilm --beir sample:debian-beir --rerank teachers/ce --rerank-top-k 20 -o eval-out
    embedkit eval minilm runs/mrl/final --manpages --dims 384,128,64 -o eval-out   # Matryoshka curve

``--rerank TEACHER`` (a CrossEncoder folder, e.g. from ``embedkit teacher``) also scores the teacher as a reranker
of the first checkpoint's top ``--rerank-top-k`` on each BEIR folder (:func:`embedkit.evaluation.rerank.rerank_beir`,
the same query/corpus subset as the rest of the run): nDCG@10 of the bi-encoder vs the rerank, printed and written
to ``OUT/rerank.json``.

``--dims 384,128,64`` scores every checkpoint at each dim (embeddings truncated and re-normalised): one row
``<label>@<dim>`` each in REPORT.md and summary.json, a "Quality vs embedding dimension" table, and ``dims.png``.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate checkpoints with mteb (hub tasks or local BEIR/STS data) and write a report",
        description="Evaluate one or more checkpoints with mteb and write result JSONs, REPORT.md, a chart and "
                    "summary.json into OUT. Local data (--beir/--sts/--manpages) works offline.",
    )
    p.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                   help="model folders, LoRA adapter folders or aliases (the first one is the baseline)")
    p.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                   help="MTEB task names (need the Hugging Face hub or its local cache)")
    p.add_argument("--beir", nargs="+", default=[], metavar="DIR",
                   help="local BEIR folders (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) or sample:NAME (e.g. sample:debian-beir)")
    p.add_argument("--sts", nargs="+", default=[], metavar="FILE",
                   help="local STS files (.jsonl/.tsv/.csv with sentence1, sentence2, score)")
    p.add_argument("--manpages", action="store_true", help="add the packaged Linux man-pages retrieval sample")
    p.add_argument("--output", "-o", required=True, metavar="OUT", help="output folder (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an OUT that holds a different run")
    p.add_argument("--labels", nargs="+", metavar="NAME", help="report names for the checkpoints (one each)")
    p.add_argument("--split", default="test", help="qrels split of the BEIR folders (default: test)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-queries", type=int, metavar="N",
                   help="score the BEIR folders on N sampled queries (their relevant documents kept)")
    p.add_argument("--max-corpus", type=int, metavar="N",
                   help="with --max-queries: fill the corpus with sampled distractors up to N documents")
    p.add_argument("--base-model", help="base model for LoRA adapter folders (default: from adapter_config.json)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model folders' own code to run")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--dims", metavar="D,D,...",
                   help="also score each checkpoint at these embedding dimensions (truncated, re-normalised), "
                        "e.g. 384,128,64: one report row per dim and OUT/dims.png")
    p.add_argument("--rerank", metavar="TEACHER",
                   help="CrossEncoder folder: also rerank the first checkpoint's top-k on each BEIR folder and "
                        "report nDCG@10 of bi-encoder vs rerank (OUT/rerank.json)")
    p.add_argument("--rerank-top-k", type=int, default=20, metavar="K",
                   help="candidates per query the --rerank teacher rescores (default: 20)")
    p.set_defaults(func=run)


def _dims(text: str) -> list[int]:
    """``"384,128,64"`` -> ``[384, 128, 64]``; a one-line error naming ``--dims`` otherwise."""
    from embedkit.errors import ConfigError

    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"invalid value: expected comma-separated integers (got {text!r})", where="--dims",
                          hint="give e.g. --dims 384,128,64") from None
    from embedkit.evaluation.runner import check_dims

    return check_dims(dims, where="--dims") or []


def run(args: argparse.Namespace) -> int:
    from embedkit.utils.io import removing_created_parents

    with removing_created_parents(args.output):  # OUT itself is written atomically; its parents go on failure
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> int:
    from embedkit.errors import ConfigError

    beir = list(args.beir)
    if args.manpages:
        from embedkit.evaluation.samples import manpages_path

        beir.append(str(manpages_path()))
    dims = _dims(args.dims) if args.dims is not None else None
    teacher = _rerank_teacher(args, beir) if args.rerank else None  # every check before the evaluation runs
    try:
        results = _run_evaluate(args, beir, dims)
    except ConfigError as exc:
        if exc.where != "dims":
            raise
        raise ConfigError(exc.message, where="--dims", hint=exc.hint) from None
    labels = [c.label for c in results.checkpoints]
    width = max(len(t["name"]) for t in results.tasks)
    print(f"{'task'.ljust(width)}  " + "  ".join(lab[:14].rjust(14) for lab in labels))
    for t in results.tasks:
        vals = [results.scores[lab][t["name"]].main_score for lab in labels]
        print(f"{t['name'].ljust(width)}  " + "  ".join(("n/a" if v is None else f"{v:.4f}").rjust(14) for v in vals))
    charts = "comparison.png, dims.png" if dims else "comparison.png"
    print(f"wrote {args.output}/REPORT.md, summary.json, {charts} and mteb results", file=sys.stderr)
    if teacher is not None:
        # local BEIR tasks come first in the report, in --beir order: the rerank rows carry the same names
        _rerank(args, beir, teacher, results.checkpoints[0].label, [t["name"] for t in results.tasks[:len(beir)]])
    return 0


def _run_evaluate(args: argparse.Namespace, beir: list[str], dims: list[int] | None):  # -> EvalResults
    from embedkit.evaluation.runner import evaluate

    return evaluate(
        args.checkpoints,
        tasks=args.tasks,
        beir=beir,
        sts=args.sts,
        output_dir=args.output,
        overwrite=args.overwrite,
        labels=args.labels,
        split=args.split,
        batch_size=args.batch_size,
        base_model=args.base_model,
        trust_remote_code=args.trust_remote_code,
        show_progress_bar=not args.no_progress,
        max_queries=args.max_queries,
        max_corpus=args.max_corpus,
        dims=dims,
    )


def _rerank_teacher(args: argparse.Namespace, beir: list[str]):  # -> embedkit.mining.teacher.Teacher
    """Check the --rerank options and load the teacher, before any checkpoint is evaluated."""
    from embedkit.errors import ConfigError, ModelError

    if args.rerank_top_k < 1:
        raise ConfigError(f"invalid value: must be >= 1 (got {args.rerank_top_k})", where="--rerank-top-k",
                          hint="rerank e.g. the top 20 candidates")
    if not beir:
        raise ConfigError("--rerank needs a BEIR folder to rerank on", where="--rerank",
                          hint="add --beir DIR (or sample:debian-beir) or --manpages")
    from embedkit.mining.teacher import Teacher

    try:
        return Teacher.load(args.rerank, "cross", batch_size=args.batch_size)
    except ModelError as exc:
        raise ModelError(exc.message, where="--rerank", hint=exc.hint) from None


def _rerank(args: argparse.Namespace, beir: list[str], teacher, label: str, names: list[str]) -> None:
    import json
    from pathlib import Path

    from embedkit.data.beir import load_beir
    from embedkit.data.samples import resolve_data_path
    from embedkit.evaluation.rerank import rerank_beir
    from embedkit.evaluation.runner import load_checkpoint
    from embedkit.utils.io import atomic_file

    model = load_checkpoint(args.checkpoints[0], base_model=args.base_model, trust_remote_code=args.trust_remote_code)
    rows = []
    for folder, name in zip(beir, names):
        data = load_beir(resolve_data_path(folder), split=args.split)
        if args.max_queries is not None or args.max_corpus is not None:  # the subset the mteb run scored
            data = data.subset(args.max_queries, args.max_corpus)
        res = rerank_beir(model, teacher, data, top_k=args.rerank_top_k, batch_size=args.batch_size,
                          show_progress_bar=None if not args.no_progress else False)
        rows.append({**res.to_json(), "task": name, "source": str(folder),
                     "bi_encoder_checkpoint": label, "teacher": args.rerank})
    print(f"rerank of {label}'s top {args.rerank_top_k} by {args.rerank}:")
    for r in rows:
        b, t = r["bi_encoder"]["ndcg@10"], r["rerank"]["ndcg@10"]
        print(f"  {r['task']}: nDCG@10 bi-encoder {b:.4f}  rerank {t:.4f}  ({100 * (t - b):+.2f} points)")
    with atomic_file(Path(args.output) / "rerank.json") as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(f"wrote {args.output}/rerank.json", file=sys.stderr)
