"""``embedkit`` command line: ``train | recipes | teacher | mntp | synth | mine | eval | soup | encode``.

Each sub-command lives in ``embedkit/commands/<name>.py`` with ``register(subparsers)`` and ``run(args) -> int``.
User errors (:class:`embedkit.errors.EmbedkitError`) print one line ``embedkit: error: ...`` and exit 2; no
traceback unless ``--debug``. Ctrl-C at any point (while the heavy libraries load, too) prints
``embedkit: interrupted`` and exits 130.

Start-up stays light: this module, the package and every ``register`` import only the standard library, so
``embedkit --help`` never loads torch; each command's ``run`` imports what it needs.

Example::

    embedkit encode --model minilm --input texts.jsonl --output emb.npy
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback

COMMANDS = ("train", "recipes", "mntp", "synth", "mine", "teacher", "eval", "soup", "encode")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors on one line (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        sys.stderr.write(f"embedkit: error: {message} (fix: see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="embedkit", description="Fine-tune and use text-embedding models.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"embedkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"embedkit.commands.{name}")
        module.register(sub)
    return parser


def _version() -> str:
    from embedkit import __version__

    return __version__


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not _isatty(sys.stderr):
        # transformers draws its "Loading weights" bars through huggingface_hub's switch, read when the libraries
        # are first imported (after this): in logs and pipes they are noise. embedkit's own bars (mining, encoding,
        # training, eval, soup) do not use that switch and stay; a user's explicit setting wins.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("sentence_transformers", "transformers", "datasets", "mteb", "httpx", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedkit`` console script; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        return _main(argv, debug)
    except KeyboardInterrupt:  # also while argparse runs or torch is still importing: one line, no traceback
        if debug:
            traceback.print_exc()
        sys.stderr.write("embedkit: interrupted\n")
        return 130


def _main(argv: list[str], debug: bool) -> int:
    from embedkit.errors import EmbedkitError

    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(message)s")
    _quiet_libraries()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2, its one line already written)
        return exc.code if isinstance(exc.code, int) else 0
    try:
        return int(args.func(args) or 0)
    except EmbedkitError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"embedkit: error: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # a bug: say so on one line, keep the traceback for --debug
        if debug:
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(
            f"embedkit: internal error: {type(exc).__name__}: {first} (rerun with --debug and report it)\n"
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
