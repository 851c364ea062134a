"""``embedkit mine``: not implemented yet."""

from __future__ import annotations

import argparse

from embedkit.errors import EmbedkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mine", help="(coming soon)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise EmbedkitError("'embedkit mine' is not implemented yet")
