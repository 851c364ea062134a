"""``embedkit mine``: add hard negatives (and optional teacher scores) to training pairs, offline.

The corpus is every positive (and given negative) of the pairs, plus ``--corpus`` (a JSONL file with ``text``, or
a BEIR folder). Embeddings are cached under ``--cache-dir``, so a second run with other filters encodes nothing.
The output JSONL is written atomically; a summary says what each filter removed.

Examples::

    embedkit mine --pairs train.jsonl --model minilm -o mined.jsonl --num-negatives 7 --cache-dir .embedkit_cache
    embedkit mine --pairs train.jsonl --corpus corpus.jsonl --index ivf --nprobe 32 -o mined.jsonl
    embedkit mine --pairs train.jsonl -o mined.jsonl --teacher ./my-cross-encoder --teacher-type cross
    # sharded encoding over 2 processes (CPU: one thread each)
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m embedkit.cli mine --pairs train.jsonl -o mined.jsonl \\
        --cache-dir .embedkit_cache
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ratio(text: str) -> float | None:
    return None if text.lower() in ("none", "off") else float(text)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mine", help="mine hard negatives for training pairs (FAISS, positive-aware filters, cache)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", required=True, help="pairs: .jsonl/.csv/.parquet (.gz ok), a BEIR folder or a saved HF dataset")
    p.add_argument("--split", default="train",
                   help="qrels split of a BEIR --pairs folder (default: train; there is no fall-back to test)")
    p.add_argument("--corpus", help="extra documents: JSONL with 'text' (and optional 'title') or a BEIR folder")
    p.add_argument("--model", default="minilm", help="embedding model folder or alias (default: minilm)")
    p.add_argument("--output", "-o", required=True, help="output JSONL (written atomically)")
    p.add_argument("--num-negatives", type=int, default=7)
    p.add_argument("--range-min", type=int, default=0, help="skip the N most similar non-positive candidates")
    p.add_argument("--range-max", type=int, default=50, help="consider candidates up to this rank")
    p.add_argument("--max-score-ratio", type=_ratio, default=0.95,
                   help="drop candidates scoring above RATIO x the lowest positive score ('none' disables)")
    p.add_argument("--max-score-margin", type=float, default=None,
                   help="drop candidates scoring above (lowest positive score - MARGIN)")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="keep candidates whose normalised text equals a positive (dropped by default)")
    p.add_argument("--sampling", choices=["top", "random"], default="top")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", choices=["flat", "ivf", "hnsw"], default="flat")
    p.add_argument("--nlist", type=int, help="IVF cells (default 4 x sqrt(corpus size))")
    p.add_argument("--nprobe", type=int, help="IVF cells visited per query (default nlist / 8)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-search", type=int, help="HNSW search beam (default max(128, 2k))")
    p.add_argument("--no-gpu", action="store_true", help="never move the FAISS index to a GPU")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--drop-incomplete", action="store_true", help="leave out queries with fewer negatives than asked")
    p.add_argument("--teacher", help="CrossEncoder or bi-encoder folder: store positive_scores/negative_scores")
    p.add_argument("--teacher-type", choices=["cross", "bi"], default="cross")
    p.add_argument("--cache-dir", help="embedding cache folder (default: $EMBEDKIT_CACHE/embeddings)")
    p.add_argument("--shard-size", type=int, default=4096, help="texts per cache shard (resume / rank unit)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--skip-invalid", action="store_true", help="skip (and count) invalid records instead of failing")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model folders' own code to run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.utils.io import check_output_file, removing_created_parents

    # the output path is checked before the pairs are read or a model is loaded, and nothing is created here
    out = check_output_file(args.output, where="--output")
    with removing_created_parents(out):
        return _mine_to(args, out)


def _mine_to(args: argparse.Namespace, out: Path) -> int:
    from embedkit.data.readers import load_pairs
    from embedkit.mining.config import make_config
    from embedkit.mining.distributed import distributed_session
    from embedkit.mining.miner import default_cache_dir, mine_hard_negatives

    cfg = make_config(
        num_negatives=args.num_negatives, range_min=args.range_min, range_max=args.range_max,
        max_score_ratio=args.max_score_ratio, max_score_margin=args.max_score_margin,
        drop_duplicates=not args.keep_duplicates, sampling=args.sampling, seed=args.seed, index=args.index,
        nlist=args.nlist, nprobe=args.nprobe, hnsw_m=args.hnsw_m, ef_search=args.ef_search,
        use_gpu=False if args.no_gpu else "auto", batch_size=args.batch_size, drop_incomplete=args.drop_incomplete)
    cache_dir = None if args.no_cache else (args.cache_dir or str(default_cache_dir()))
    with distributed_session() as (rank, _world):
        pairs = load_pairs(args.pairs, skip_invalid=args.skip_invalid, split=args.split)
        if pairs.num_skipped and rank == 0:
            print(f"embedkit mine: {pairs.summary} (first: {pairs.first_error})", file=sys.stderr)
        result = mine_hard_negatives(pairs, args.model, config=cfg, corpus=args.corpus, cache_dir=cache_dir,
                                     teacher=args.teacher, teacher_type=args.teacher_type,
                                     output=out if rank == 0 else None, trust_remote_code=args.trust_remote_code,
                                     shard_size=args.shard_size)
        if rank == 0:
            print(result.stats.summary(), file=sys.stderr)
            print(f"wrote {len(result.pairs)} records to {out}", file=sys.stderr)
    return 0
