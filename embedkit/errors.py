"""Errors that embedkit shows to users.

Every error a user can cause (bad file, bad recipe key, missing model...) is an :class:`EmbedkitError`.
The CLI prints it as **one line** -- what is wrong, where, how to fix it -- and exits with
:attr:`EmbedkitError.exit_code` (2 for usage / input errors). Anything else that escapes is a bug and is
reported as an internal error (exit 1); ``--debug`` shows the traceback.

Example:
    >>> from embedkit.errors import InputError
    >>> err = InputError("field 'query' is missing", where="pairs.jsonl:3", hint="add a non-empty 'query' string")
    >>> str(err)
    "pairs.jsonl:3: field 'query' is missing (fix: add a non-empty 'query' string)"
"""

from __future__ import annotations


class EmbedkitError(Exception):
    """Base class of user-facing errors: ``where: what (fix: hint)`` on one line."""

    exit_code: int = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = " ".join(str(message).split())  # one line, always
        self.where = where
        self.hint = " ".join(hint.split()) if hint else None
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class InputError(EmbedkitError):
    """Bad user data: a file, a record, a folder layout."""


class ConfigError(EmbedkitError):
    """Bad recipe / option values or contradictory settings."""


class ModelError(EmbedkitError):
    """A model cannot be loaded or does not support what was asked (e.g. bidirectional attention)."""


class OutputError(EmbedkitError):
    """The output location cannot be written, or holds a different run."""
