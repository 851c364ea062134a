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


#: MNTPConfig settings with no flag: the adapted model is always saved merged
_NOT_FLAGS = ("lora.merge_on_save",)


def register(sub: argparse._SubParsersAction) -> None:
    from embedkit.validation import on_first_use

    p = sub.add_parser("mntp", help="adapt a decoder LLM to bidirectional attention before training (LLM2Vec MNTP)",
                       description="Masked next-token prediction with LoRA on a bidirectional decoder; writes a "
                                   "merged model folder for embedkit train's model.name. --objective clm runs the "
                                   "control instead: the same steps as ordinary causal-LM training, model left "
                                   "causal.")
    p.add_argument("-o", "--output-dir", required=True, help="folder for the adapted model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    on_first_use(p, _add_mntp_flags)
    p.set_defaults(func=run)


def _add_mntp_flags(p: argparse.ArgumentParser) -> None:
    """Every setting, its type, choices, default and help come from MNTPConfig."""
    from embedkit.training.mntp import MNTPConfig
    from embedkit.validation import add_model_flags

    add_model_flags(p.add_argument_group("MNTP settings"), MNTPConfig, exclude=_NOT_FLAGS)


def run(args: argparse.Namespace) -> int:
    from embedkit.training.mntp import MNTPConfig, run_mntp, summary_line
    from embedkit.validation import model_from_args

    config = model_from_args(MNTPConfig, args, exclude=_NOT_FLAGS, where="mntp")
    result = run_mntp(config, args.output_dir, overwrite=args.overwrite)
    print(f"{summary_line(config, result)}; model in {result.output_dir}", file=sys.stderr)
    return 0
