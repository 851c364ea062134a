"""``embedkit train RECIPE.yaml``: fine-tune an embedding model from a YAML recipe.

The recipe is validated (keys, types, contradictions) before anything is loaded; ``--set key=value`` overrides any
key (values are YAML scalars: ``--set training.lr=1e-5 --set model.lora.r=8``). Checkpoints are crash-safe and
``--resume`` continues exactly where the last complete checkpoint left off (same weights as an uninterrupted run).

Examples::

    embedkit train recipes/minilm-cpu.yaml -o runs/minilm
    embedkit train recipes/minilm-cpu.yaml -o runs/minilm --resume                 # after a crash / kill
    embedkit train recipes/minilm-cpu.yaml --set training.max_steps=50 -o runs/quick --overwrite
    torchrun --nproc_per_node 2 -m embedkit.cli train recipes/minilm-cpu.yaml -o runs/ddp

See ``docs/training.md`` for the recipe reference.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune an embedding model from a YAML recipe",
                       description="Fine-tune an embedding model from a YAML recipe (see docs/training.md).")
    p.add_argument("recipe", help="recipe YAML file (e.g. recipes/minilm-cpu.yaml)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set training.lr=1e-5 (repeatable)")
    p.add_argument("-o", "--output-dir", help="output folder (default: the recipe's output.dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the latest complete checkpoint in the output folder (or from CHECKPOINT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe and data, then stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.errors import ConfigError
    from embedkit.training.config import load_recipe

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other", where="--resume",
                          hint="use --resume to continue a run, --overwrite to start it again")
    recipe = load_recipe(args.recipe, sets=args.sets)
    from embedkit.training.runner import load_data, prepare_output, resolve_output_dir, run_recipe

    out = resolve_output_dir(recipe, args.output_dir)
    if args.dry_run:
        prepare_output(out, resume=args.resume, overwrite=args.overwrite)
        multi = recipe.stages is not None
        for i, (name, r) in enumerate(recipe.stage_recipes()):
            data = load_data(r, stage_prefix=f"stages.{i}." if multi else "")
            for s in data.stats:
                print(f"{name or 'train'}: {s.name}: {s.pairs} pairs ({s.with_negatives} with negatives)",
                      file=sys.stderr)
        print(f"recipe OK; would write to {out}", file=sys.stderr)
        return 0
    result = run_recipe(recipe, out, resume=args.resume, overwrite=args.overwrite)
    msg = f"trained {result.stages[-1].global_step} steps; model in {result.final_dir}"
    if result.metrics:
        msg += "; " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if "ndcg" in k)
    print(msg, file=sys.stderr)
    return 0
