"""``embedkit soup``: not implemented yet."""

from __future__ import annotations

import argparse

from embedkit.errors import EmbedkitError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("soup", help="(coming soon)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise EmbedkitError("'embedkit soup' is not implemented yet")
