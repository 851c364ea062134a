"""``embedkit synth``: synthetic training pairs from a corpus alone -- an instruct LLM writes queries for each
document and spans of the document are added as more (``--method llm+crop``, the default; ``llm`` or ``crop`` for
one kind), filtered and written as ordinary embedkit pairs with ``query_type`` and ``doc_id``.

Generation is resumable: finished batches wait in ``OUT.partial`` (``--resume`` continues it after Ctrl-C or a
kill); the output path appears only when complete. The summary counts what each filter removed.

Examples::

    embedkit synth --corpus docs.jsonl --model smollm2 -o pairs.jsonl --query-types question,keyword
    embedkit synth --corpus docs.jsonl -o pairs.jsonl --round-trip-model minilm --round-trip-k 5 --resume
    embedkit synth --corpus docs.jsonl --method crop -o pairs.jsonl      # no generator needed
    embedkit mine --pairs pairs.jsonl -o mined.jsonl && embedkit train recipe.yaml --pairs mined.jsonl
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from embedkit.validation import on_first_use

    p = sub.add_parser("synth", help="generate training pairs from a corpus (LLM queries or crops), filtered",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True,
                   help="documents: JSONL with 'text' (optional 'title', 'id' / '_id') or a BEIR folder")
    p.add_argument("--output", "-o", required=True, help="output pairs JSONL (written atomically; .gz ok)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUTPUT.partial from a stopped run (same settings), skipping finished documents")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    on_first_use(p, _add_synth_flags)
    p.set_defaults(func=run)


def _add_synth_flags(p: argparse.ArgumentParser) -> None:
    """Every setting's flag, type, default and help come from SynthConfig (a recipe's synth: keys)."""
    from embedkit.synth.config import SynthConfig
    from embedkit.validation import add_model_flags

    add_model_flags(p.add_argument_group("synth settings"), SynthConfig)


def run(args: argparse.Namespace) -> int:
    from embedkit.synth.config import SynthConfig
    from embedkit.synth.pipeline import partial_path, synthesize
    from embedkit.utils.io import check_output_file, removing_created_parents
    from embedkit.validation import model_from_args

    cfg = model_from_args(SynthConfig, args, where="synth")
    out = check_output_file(args.output, where="--output")
    try:
        with removing_created_parents(out):
            result = synthesize(args.corpus, out, cfg, resume=args.resume, progress=not args.no_progress)
    except KeyboardInterrupt:
        if partial_path(out).exists():
            print(f"embedkit synth: stopped; finished batches are in {partial_path(out)} "
                  "(rerun with --resume to continue)", file=sys.stderr)
        raise
    rate = f"; {result.queries_per_second:.2f} queries/s" if result.generated_this_run else ""
    print(f"embedkit synth: {result.stats.summary()}{rate}", file=sys.stderr)
    print(f"wrote {len(result.pairs)} pairs to {out}", file=sys.stderr)
    return 0
