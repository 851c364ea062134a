"""``embedkit teacher``: train a cross-encoder teacher (reranker) on pairs with mined negatives.

sentence-transformers' ``CrossEncoder`` and its trainer, initialised from a local encoder (``--model``, MiniLM by
default); losses ``bce`` (binary cross-entropy on (query, document) rows), ``listnet`` or ``lambda`` (listwise over
each query's positives and negatives). The pairs need negatives: run ``embedkit mine`` first (records without
negatives are skipped and counted; none at all is an error naming the mine command). The output is a normal
``CrossEncoder`` folder (safetensors) with a model card, written atomically.

Examples::

    embedkit mine --pairs sample:debian-train -o mined.jsonl --num-negatives 7
    embedkit teacher --pairs mined.jsonl -o teachers/ce --steps 500
    embedkit teacher --pairs mined.jsonl --loss lambda --batch-size 8 -o teachers/ce-lambda
    embedkit eval minilm --beir sample:debian-beir --rerank teachers/ce --rerank-top-k 20 -o eval-rerank
    embedkit mine --pairs sample:debian-train -o scored.jsonl --teacher teachers/ce
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from embedkit.validation import on_first_use

    p = sub.add_parser("teacher", help="train a cross-encoder teacher (reranker) on pairs with mined negatives",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True,
                   help="pairs with negatives (embedkit mine's output): .jsonl/.csv/.parquet (.gz ok), a BEIR "
                        "folder, a saved HF dataset or sample:NAME")
    p.add_argument("--split", default="train",
                   help="qrels split of a BEIR --pairs folder (default: train; there is no fall-back to test)")
    p.add_argument("--output", "-o", required=True, help="teacher folder to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid records instead of failing")
    on_first_use(p, _add_teacher_flags)
    p.set_defaults(func=run)


def _add_teacher_flags(p: argparse.ArgumentParser) -> None:
    """Every setting, its type, choices, default and help come from TeacherConfig."""
    from embedkit.training.teacher import TeacherConfig
    from embedkit.validation import add_model_flags

    add_model_flags(p.add_argument_group("teacher settings"), TeacherConfig)


def run(args: argparse.Namespace) -> int:
    from embedkit.training.teacher import TeacherConfig, check_teacher_output, train_teacher
    from embedkit.utils.io import removing_created_parents
    from embedkit.validation import model_from_args

    cfg = model_from_args(TeacherConfig, args, where="teacher")
    from pathlib import Path

    check_teacher_output(Path(args.output), args.overwrite)  # before the pairs are read or a model is loaded
    with removing_created_parents(args.output):
        result = train_teacher(args.pairs, args.output, cfg, overwrite=args.overwrite,
                               skip_invalid=args.skip_invalid, split=args.split)
    print(result.summary(), file=sys.stderr)
    print(f"wrote {args.output} (CrossEncoder folder; load with CrossEncoder(path) or embedkit mine --teacher)",
          file=sys.stderr)
    return 0
