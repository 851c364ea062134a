"""``embedkit recipes``: list the bundled recipes, or print one to start your own from.

Examples::

    embedkit recipes                              # one line each: name and what it does
    embedkit recipes minilm-cpu > my-recipe.yaml  # a copy to edit; then: embedkit train my-recipe.yaml
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recipes", help="list the bundled training recipes (or print one)",
                       description="List the recipes that ship with embedkit, one line each; with a NAME, print "
                                   "that recipe's YAML (to copy and edit). Train one with 'embedkit train NAME'.")
    p.add_argument("name", nargs="?", metavar="NAME", help="print this bundled recipe's YAML to stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from embedkit.recipes import describe_recipe, list_recipes, resolve_recipe

    if args.name:
        sys.stdout.write(resolve_recipe(args.name).read_text(encoding="utf-8"))
        return 0
    recipes = list_recipes()
    width = max((len(n) for n in recipes), default=0)
    for name, path in recipes.items():
        print(f"{name:<{width}}  {describe_recipe(path)}".rstrip())
    return 0
