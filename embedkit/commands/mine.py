"""``embedkit mine``: add hard negatives (and optional teacher scores) to training pairs, offline.

The corpus is every positive (and given negative) of the pairs, plus ``--corpus`` (a JSONL file with ``text``, or
a BEIR folder). Embeddings are cached under ``--cache-dir``, so a second run with other filters encodes nothing.
The output JSONL is written atomically; a summary says what each filter removed.

Examples::

    embedkit mine --pairs train.jsonl --model minilm -o mined.jsonl --num-negatives 7 --cache-dir .embedkit_cache
    embedkit mine --pairs train.jsonl --corpus corpus.jsonl --index ivf --nprobe 32 -o mined.jsonl
    embedkit mine --pairs train.jsonl -o mined.jsonl --teacher ./my-cross-encoder --teacher-type cross
    # listwise distillation: the teacher's scores of each query's top 20 candidates (cached, resumable)
    embedkit mine --pairs train.jsonl -o scored.jsonl --teacher ./my-cross-encoder --num-candidates 20
    # sharded encoding (and teacher scoring) over 2 processes (CPU: one thread each)
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m embedkit.cli mine --pairs train.jsonl -o mined.jsonl \\
        --cache-dir .embedkit_cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from embedkit.validation import on_first_use

    p = sub.add_parser("mine", help="mine hard negatives for training pairs (FAISS, positive-aware filters, cache)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True,
                   help="pairs: .jsonl/.csv/.parquet (.gz ok), a BEIR folder, a saved HF dataset or sample:NAME")
    p.add_argument("--split", default="train",
                   help="qrels split of a BEIR --pairs folder (default: train; there is no fall-back to test)")
    p.add_argument("--corpus", help="extra documents: JSONL with 'text' (and optional 'title'), a BEIR folder or "
                                    "sample:NAME")
    p.add_argument("--model", default="minilm", help="embedding model folder or alias (default: minilm)")
    p.add_argument("--output", "-o", required=True, help="output JSONL (written atomically)")
    on_first_use(p, _add_mining_flags)
    p.add_argument("--teacher", help="CrossEncoder or bi-encoder folder: store positive_scores/negative_scores")
    p.add_argument("--teacher-type", choices=["cross", "bi"], default="cross")
    p.add_argument("--cache-dir", help="embedding cache folder (default: $EMBEDKIT_CACHE/embeddings); teacher "
                                      "scores live in its scores/ sub-folder")
    p.add_argument("--shard-size", type=int, default=4096,
                   help="texts (teacher: pairs) per cache shard (resume / rank unit)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding and score caches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid records instead of failing")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model folders' own code to run")
    p.set_defaults(func=run)


def _add_mining_flags(p: argparse.ArgumentParser) -> None:
    """Every mining setting, its type, choices, default and help come from MiningConfig (the recipes' miner: keys)."""
    from embedkit.mining.config import MiningConfig
    from embedkit.validation import add_model_flags

    settings = p.add_argument_group("mining settings (recipe section 'miner:')")
    add_model_flags(settings, MiningConfig, aliases={"drop_duplicates": ["--keep-duplicates"]})
    settings.add_argument("--no-gpu", dest="use_gpu", action="store_const", const=False, default=argparse.SUPPRESS,
                          help="same as --use-gpu false")


def run(args: argparse.Namespace) -> int:
    from embedkit.utils.io import check_output_file, removing_created_parents

    # the output path is checked before the pairs are read or a model is loaded, and nothing is created here
    out = check_output_file(args.output, where="--output")
    with removing_created_parents(out):
        return _mine_to(args, out)


def _mine_to(args: argparse.Namespace, out: Path) -> int:
    from embedkit.data.readers import load_pairs
    from embedkit.data.samples import resolve_data_path
    from embedkit.mining.config import MiningConfig
    from embedkit.mining.distributed import distributed_session
    from embedkit.mining.miner import check_teacher_settings, default_cache_dir, mine_hard_negatives
    from embedkit.validation import model_from_args

    cfg = model_from_args(MiningConfig, args, where="mining")
    check_teacher_settings(cfg, args.teacher, flags=True)  # before the pairs are read or a model loaded
    if args.shard_size < 1:
        from embedkit.errors import ConfigError

        raise ConfigError(f"invalid value: must be >= 1 (got {args.shard_size})", where="--shard-size",
                          hint="give the number of texts (teacher: pairs) per cache shard, e.g. 4096")
    cache_dir = None if args.no_cache else (args.cache_dir or str(default_cache_dir()))
    with distributed_session() as (rank, _world):
        pairs = load_pairs(resolve_data_path(args.pairs), skip_invalid=args.skip_invalid, split=args.split)
        if pairs.num_skipped and rank == 0:
            print(f"embedkit mine: {pairs.summary} (first: {pairs.first_error})", file=sys.stderr)
        corpus = None if args.corpus is None else str(resolve_data_path(args.corpus))
        result = mine_hard_negatives(pairs, args.model, config=cfg, corpus=corpus, cache_dir=cache_dir,
                                     teacher=args.teacher, teacher_type=args.teacher_type,
                                     output=out if rank == 0 else None, trust_remote_code=args.trust_remote_code,
                                     shard_size=args.shard_size,
                                     show_progress_bar=False if args.no_progress else None)
        if rank == 0:
            print(result.stats.summary(), file=sys.stderr)
            print(f"wrote {len(result.pairs)} records to {out}", file=sys.stderr)
    return 0
