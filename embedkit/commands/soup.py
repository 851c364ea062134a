"""``embedkit soup``: average fine-tuned checkpoints into one model (uniform, weighted or greedy).

The output folder is a complete model (pipeline of the first member, averaged weights of every module, a model
card listing members, weights and held-out scores); it is written atomically. Mismatched members (architecture,
tensor names/shapes, tokenizer, pooling, LoRA bases), pickle-only or missing weights are refused with one line
naming the first difference, before anything is written.

Example::

    embedkit soup runs/seed1 runs/seed2 runs/seed3 --method greedy --eval heldout_beir/ -o soup
    embedkit soup runs/a runs/b --method weighted --weights 2 1 --base minilm --base-weight 0.2 -o soup
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="average fine-tuned checkpoints (uniform / weighted / greedy model soup)",
                       description="Average fine-tuned checkpoints into one model folder: uniform, weighted, or "
                                   "greedy by held-out score; LoRA adapters are merged into their base first.")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT",
                   help="sentence-transformers / transformers folders, or LoRA adapter folders (one kind)")
    p.add_argument("--method", choices=["uniform", "weighted", "greedy"], default="uniform",
                   help="uniform average, --weights, or greedy selection by held-out score (default: uniform)")
    p.add_argument("--weights", nargs="+", type=float, metavar="W", help="one weight per checkpoint (weighted)")
    p.add_argument("--eval", dest="eval_dir", metavar="BEIR_DIR",
                   help="held-out BEIR folder: greedy selection and scores in the model card")
    p.add_argument("--metric", default="ndcg@10", help="held-out metric (default: ndcg@10)")
    p.add_argument("--base", help="base model folder or alias to interpolate with: (1-b)*soup + b*base")
    p.add_argument("--base-weight", type=float, metavar="B", help="b in [0, 1), required with --base")
    p.add_argument("--output", "-o", required=True, help="output model folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.errors import ConfigError
    from embedkit.soup import soup

    if args.method == "greedy" and args.eval_dir is None:
        raise ConfigError("greedy soup needs a held-out set", where="--eval",
                          hint="pass --eval BEIR_DIR (a BEIR folder the members were not trained on)")
    score_fn = None
    if args.eval_dir is not None:  # the held-out scorer comes from evaluation; soup itself never imports it
        from embedkit.evaluation.scoring import beir_score_fn, check_metric

        check_metric(args.metric, where="--metric")
        score_fn = beir_score_fn(args.eval_dir, args.metric)
    res = soup(args.checkpoints, output=args.output, method=args.method, weights=args.weights,
               score_fn=score_fn, base=args.base, base_weight=args.base_weight, overwrite=args.overwrite)
    kept = sum(m.kept for m in res.members)
    msg = f"wrote a {res.method} soup of {kept}/{len(res.members)} checkpoint(s) to {res.output}"
    if res.base is not None:
        msg += f" (base weight {res.base_weight:g})"
    if res.score is not None:
        msg += f"; held-out {res.metric} {res.score:.4f}"
    print(msg, file=sys.stderr)
    return 0
