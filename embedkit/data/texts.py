"""Texts to embed (``embedkit encode``), read with the same readers as pairs and corpora.

Why a module of its own: encode used to split every input on newlines, so a CSV file gave one vector per *line*
(header and quoted newlines included) and a ``.jsonl.gz`` file failed as "not valid UTF-8". Here each format is
opened, decompressed and decoded exactly as :mod:`embedkit.data.readers` does for pairs, with the same
``file:line`` messages:

==============================  =====================================================================
``.jsonl`` / ``.ndjson`` / ``.json``  one object per line with a text field (``text``) and an optional ``id``
``.csv`` / ``.tsv``             a header row naming the text column (and optionally ``id``); quoted cells
                                may span lines: one record, one vector
``.parquet``, a saved HF dataset  a text column (and optionally ``id``)
anything else (``.txt``)        one text per line; blank lines are an error
==============================  =====================================================================

Every format may be gzipped (``.gz``). A record without an ``id`` gets the line it starts on (rows for Parquet and
datasets) as its id.

Example:
    >>> import os, tempfile
    >>> from embedkit.data.texts import read_texts
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "docs.csv")
    >>> _ = open(path, "w").write('id,text\\nd1,"two\\nlines"\\nd2,one line\\n')
    >>> texts = read_texts(path)
    >>> texts.ids, texts.texts
    (['d1', 'd2'], ['two\\nlines', 'one line'])
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedkit.data.readers import (
    _file_format, _Invalid, _iter_csv, _iter_hf_dataset, _iter_jsonl, _iter_parquet, _iter_text_lines,
)
from embedkit.errors import InputError

__all__ = ["TextSet", "read_texts"]

_Rec = tuple[str, Any]


@dataclass
class TextSet:
    """Texts in file order with their ids; ``skipped`` counts invalid records left out with ``skip_invalid``."""

    ids: list[str]
    texts: list[str]
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


def _format_of(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf"
        raise InputError(f"{path} is a folder, not a file of texts", where=str(path),
                         hint="give a .jsonl/.csv/.tsv/.parquet/.txt file (optionally .gz) or a saved HF dataset")
    return _file_format(path) or "lines"


def _iter_table(path: Path, text_field: str) -> Iterator[_Rec]:
    """CSV/TSV rows as dicts, read exactly as pair files are (the header must name ``text_field``)."""
    return _iter_csv(path, required=text_field, cell=lambda _column, value: value,
                     header_hint=f"name the text column '{text_field}' or pass --text-field")


def _iter_lines(path: Path) -> Iterator[_Rec]:
    for where, line in _iter_text_lines(path):
        if isinstance(line, _Invalid):
            yield where, line
        elif not line.strip():
            yield where, _Invalid("empty line", "empty line", "remove blank lines or pass --skip-invalid")
        else:
            yield where, {"text": line}


def _text_of(rec: Any, text_field: str, id_field: str, where: str) -> tuple[str, str]:
    if not isinstance(rec, dict):
        raise _Invalid("not an object", "record is not a JSON object", f'use {{"{text_field}": "..."}}')
    text = rec.get(text_field)
    if text is None:
        raise _Invalid("missing text", f"field '{text_field}' is missing",
                       f"add a '{text_field}' string or pass --text-field")
    if not isinstance(text, str):
        raise _Invalid("non-string text", f"field '{text_field}' is {type(text).__name__}, not a string",
                       "make it a string")
    if not text.strip():
        raise _Invalid("empty text", f"field '{text_field}' is empty", "remove the record or give it text")
    rid = rec.get(id_field)
    if rid is None or rid == "":
        rid = where.rsplit(":", 1)[-1].removeprefix("row ").strip()  # the line (or row) the record starts on
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise _Invalid("bad id", f"'{id_field}' is {type(rid).__name__}, not a string or integer",
                       "use string or integer ids")
    return str(rid), text


def read_texts(path: str | os.PathLike, *, text_field: str = "text", id_field: str = "id",
               skip_invalid: bool = False) -> TextSet:
    """Read the texts of a file (see the module docstring for the formats), validated.

    Args:
        path: the input file (or saved HF dataset folder).
        text_field: the field / column holding the text (plain text files: each line).
        id_field: the optional field / column holding a unique id.
        skip_invalid: skip (and count) invalid records instead of raising.

    Raises:
        InputError: the first invalid record as ``file:line: what (fix: how)``; a missing, unreadable or empty
            file; duplicate ids.
    """
    src = Path(path)
    if not src.exists():
        raise InputError(f"input file {src} does not exist", where="--input", hint="check the --input path")
    fmt = _format_of(src)
    records: Iterator[_Rec] = {
        "jsonl": lambda: _iter_jsonl(src),
        "csv": lambda: _iter_table(src, text_field),
        "parquet": lambda: _iter_parquet(src),
        "hf": lambda: _iter_hf_dataset(src),
        "lines": lambda: _iter_lines(src),
    }[fmt]()
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, str] = {}
    skipped = 0
    for where, rec in records:
        try:
            if isinstance(rec, _Invalid):
                raise rec
            rid, text = _text_of(rec, "text" if fmt == "lines" else text_field, id_field, where)
            if rid in seen:
                raise _Invalid("duplicate id", f"duplicate id '{rid}' (first at {seen[rid]})", "make every 'id' unique")
            seen[rid] = where
        except _Invalid as exc:
            if not skip_invalid:
                raise InputError(exc.message, where=where, hint=exc.hint) from None
            skipped += 1
            continue
        ids.append(rid)
        texts.append(text)
    if not texts:
        raise InputError(f"{src} holds no texts", where="--input", hint="give a file with at least one valid text")
    return TextSet(ids=ids, texts=texts, skipped=skipped)
