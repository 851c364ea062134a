"""``embedkit train RECIPE``: fine-tune an embedding model from a bundled recipe (by name) or a YAML recipe file.

The recipe is validated (keys, types, contradictions) before anything is loaded; ``--set key=value`` overrides any
key (values are YAML scalars: ``--set training.lr=1e-5 --set model.lora.r=8``) and ``--pairs FILE`` trains a
one-data-set recipe on your pairs instead of its own (the same as ``--set data.datasets.0.path=FILE``; the recipe's
mining and losses stay). Checkpoints are crash-safe and ``--resume`` continues exactly where the last complete
checkpoint left off (same weights as an uninterrupted run).

Examples::

    embedkit recipes                                                               # the bundled recipes
    embedkit train minilm-cpu --pairs my_pairs.jsonl -o runs/mine
    embedkit train minilm-cpu -o runs/minilm --resume                              # after a crash / kill
    embedkit train my-recipe.yaml --set training.max_steps=50 -o runs/quick --overwrite
    torchrun --nproc_per_node 2 -m embedkit.cli train minilm-cpu -o runs/ddp

See ``docs/training.md`` for the recipe reference.
"""

from __future__ import annotations

import argparse
import sys


#: the recipe key that ``--pairs`` sets
_PAIRS_KEY = "data.datasets.0.path"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune an embedding model from a recipe",
        description="Fine-tune an embedding model from a recipe: a bundled one by name (list them with "
                    "'embedkit recipes') or a YAML file (see docs/training.md).",
        epilog="example: embedkit train minilm-cpu --pairs my_pairs.jsonl -o runs/mine",
    )
    p.add_argument("recipe", metavar="RECIPE",
                   help="a bundled recipe name (e.g. minilm-cpu; see 'embedkit recipes') or a recipe YAML file")
    p.add_argument("--pairs", metavar="FILE",
                   help="train on these pairs (JSONL/CSV/Parquet file, BEIR folder or sample:NAME) instead of "
                        "the recipe's data set; the recipe's mining and losses stay, its bundled eval set is "
                        "skipped (--set eval.beir=DIR scores yours). Short for --set data.datasets.0.path=FILE; "
                        "refused on recipes with several data sets or stages")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set training.lr=1e-5 (repeatable)")
    p.add_argument("-o", "--output-dir", help="output folder (default: the recipe's output.dir)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue from the latest complete checkpoint in the output folder (or from CHECKPOINT)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--dry-run", action="store_true", help="validate the recipe and data, then stop")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.errors import EmbedkitError

    try:
        return _run(args)
    except EmbedkitError as exc:
        if args.pairs is not None and exc.where == f"--set {_PAIRS_KEY}":
            exc = type(exc)(exc.message, where="--pairs", hint=exc.hint)  # name the option the user typed
            raise exc from None
        raise


def _run(args: argparse.Namespace) -> int:
    from embedkit.errors import ConfigError
    from embedkit.recipes import resolve_recipe
    from embedkit.training.config import load_recipe

    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other", where="--resume",
                          hint="use --resume to continue a run, --overwrite to start it again")
    pairs_sets = _pairs_set(args)
    recipe = load_recipe(resolve_recipe(args.recipe), sets=pairs_sets + list(args.sets))
    note = ("note: --pairs skipped the recipe's bundled eval set (it scores the recipe's own data); score your "
            "held-out data with --set eval.beir=DIR or embedkit eval") if _SKIP_EVAL in pairs_sets else ""
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
        print(f"recipe OK; would write to {out}" + (f"; {note}" if note else ""), file=sys.stderr)
        return 0
    from embedkit.evaluation.scoring import score_beir  # commands sit above evaluation: the scorer is passed down

    result = run_recipe(recipe, out, resume=args.resume, overwrite=args.overwrite, scorer=score_beir)
    msg = f"trained {result.stages[-1].global_step} steps; model in {result.final_dir}"
    if result.metrics:
        msg += "; " + ", ".join(f"{k}={v:.4f}" for k, v in result.metrics.items() if "ndcg" in k)
        if result.metrics.get("refreshes"):  # miner.refresh_every_steps: what the re-mining cost
            msg += (f"; negatives re-mined {int(result.metrics['refreshes'])}x, "
                    f"{result.metrics['refresh_seconds']:.1f} s each")
    print(msg + (f"; {note}" if note else ""), file=sys.stderr)
    return 0


def _pairs_set(args: argparse.Namespace) -> list[str]:
    """``--pairs FILE`` as the ``--set`` it stands for, after checking that the recipe has one data set to swap."""
    if args.pairs is None:
        return []
    import json

    from embedkit.errors import ConfigError
    from embedkit.recipes import resolve_recipe
    from embedkit.training.config import read_recipe_file

    key = _PAIRS_KEY
    if any(s.split("=", 1)[0].strip() == key for s in args.sets):
        raise ConfigError(f"--pairs and --set {key} both set the training data", where="--pairs",
                          hint="pass only one of them")
    data, _ = read_recipe_file(resolve_recipe(args.recipe))
    section = data.get("data")
    datasets = section.get("datasets") if isinstance(section, dict) else None
    stages = data.get("stages")
    staged_data = isinstance(stages, list) and any(isinstance(s, dict) and "data" in s for s in stages)
    if not isinstance(datasets, list) or len(datasets) != 1 or staged_data:
        what = "stages with their own data" if staged_data else f"{len(datasets or [])} data sets"
        raise ConfigError(
            f"--pairs swaps the data set of a one-data-set recipe, but {args.recipe} has {what}", where="--pairs",
            hint="set each path with --set data.datasets.N.path=FILE (stages: --set stages.N.data.datasets.M.path"
                 "=FILE), or copy the recipe (embedkit recipes NAME > mine.yaml) and edit its paths",
        )
    # JSON quoting is YAML: the path reaches the recipe as the exact string typed, whatever characters it holds
    sets = [f"{key}={json.dumps(args.pairs)}"]
    # the recipe's bundled eval set measures its own bundled data, not the user's: scored only when asked for
    evaluation = data.get("eval")
    beir = evaluation.get("beir") if isinstance(evaluation, dict) else None
    user_eval = any(s.split("=", 1)[0].strip().startswith("eval.") for s in args.sets)
    if isinstance(beir, str) and beir.startswith("sample:") and not user_eval:
        sets.append(_SKIP_EVAL)
    return sets


#: what ``--pairs`` adds when the recipe scores a bundled sample (said once the recipe is valid)
_SKIP_EVAL = "eval.beir=null"
