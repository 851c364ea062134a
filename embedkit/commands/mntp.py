"""``embedkit mntp``: adapt a decoder LLM to bidirectional attention (masked next-token prediction, LLM2Vec step 2).

Run it before ``embedkit train`` when the model is a causal decoder and the recipe sets ``bidirectional: true``; the
output folder is a plain model (LoRA merged, ``is_causal: false``) to use as ``model.name``. See
:mod:`embedkit.training.mntp` for why.

Example::

    embedkit mntp --model smollm2 --data pairs.jsonl -o runs/smollm2-mntp
    embedkit train recipes/smollm2-bidirectional-lora.yaml --set model.name=runs/smollm2-mntp -o runs/smollm2

    # the control: the same steps on the same texts as ordinary causal-LM training; the saved model stays causal
    embedkit mntp --objective clm --model smollm2 --data pairs.jsonl -o runs/smollm2-clm
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mntp", help="adapt a decoder LLM to bidirectional attention before training (LLM2Vec MNTP)",
                       description="Masked next-token prediction with LoRA on a bidirectional decoder; writes a "
                                   "merged model folder for embedkit train's model.name. --objective clm runs the "
                                   "control instead: the same steps as ordinary causal-LM training, model left "
                                   "causal.")
    p.add_argument("--model", default="smollm2", help="decoder folder or alias (default: smollm2)")
    p.add_argument("--data", required=True,
                   help="training pairs (jsonl/csv/parquet/BEIR, or sample:NAME): their texts are the MNTP corpus")
    p.add_argument("-o", "--output-dir", required=True, help="folder for the adapted model")
    p.add_argument("--steps", type=int, default=1000,
                   help="optimizer steps (default 1000, LLM2Vec's count and the best measured: ~70 min for a 135M "
                        "model on a 2-core CPU at batch 16 x 64 tokens, minutes on a GPU)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    p.add_argument("--objective", choices=("mntp", "clm"), default="mntp",
                   help="mntp (default): masked next-token prediction, bidirectional; clm: the control -- ordinary "
                        "next-token prediction on the same texts, the model stays causal")
    p.add_argument("--mask-prob", type=float, default=None, help="share of tokens masked (default 0.2; mntp only)")
    p.add_argument("--mask-token", default=None,
                   help="stand-in mask token when the tokenizer has none (default _; mntp only)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--eval-texts", type=int, default=128, help="held-out texts for the before/after loss (0: none)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from embedkit.errors import ConfigError
    from embedkit.training.mntp import MNTPConfig, run_mntp, summary_line

    masking = {k: v for k, v in (("mask_prob", args.mask_prob), ("mask_token", args.mask_token)) if v is not None}
    try:
        config = MNTPConfig(model=args.model, data=args.data, steps=args.steps, batch_size=args.batch_size,
                            lr=args.lr, objective=args.objective, **masking,
                            max_seq_length=args.max_seq_length, lora={"r": args.lora_r, "alpha": args.lora_alpha},
                            eval_texts=args.eval_texts, seed=args.seed, bf16=args.bf16)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        where = f"--{field.replace('_', '-')}: " if field else ""  # a rule over several options has no one field
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}{msg}", hint="see 'embedkit mntp --help'") from None
    result = run_mntp(config, args.output_dir, overwrite=args.overwrite)
    print(f"{summary_line(config, result)}; model in {result.output_dir}", file=sys.stderr)
    return 0
