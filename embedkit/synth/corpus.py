"""The documents queries are generated from: a JSONL corpus (``text``, optional ``title`` and ``id`` / ``_id``) or
a BEIR folder's ``corpus.jsonl``, with the ``file:line`` messages of the pair readers.

Why ids matter here: each synthetic pair records its source document (``doc_id``), resume skips finished documents
by id, and the round-trip filter needs to know which document a query came from. A record without an id gets its
line number; duplicate ids are an error.

Example:
    >>> import os, tempfile
    >>> from embedkit.synth.corpus import read_documents
    >>> d = tempfile.mkdtemp(); path = os.path.join(d, "docs.jsonl")
    >>> _ = open(path, "w").write('{"id": "ls", "title": "ls", "text": "list directory contents"}\\n')
    >>> [(doc.id, doc.full_text) for doc in read_documents(path)]
    [('ls', 'ls list directory contents')]
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from embedkit.data.readers import _Invalid, _iter_jsonl
from embedkit.errors import InputError

__all__ = ["Document", "corpus_digest", "read_documents"]


@dataclass(frozen=True)
class Document:
    """One corpus document; ``full_text`` (title and text) is what a synthetic pair's positive holds."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text


def _document(rec: object, where: str) -> Document:
    if not isinstance(rec, dict):
        raise InputError("line is not a JSON object", where=where, hint='use {"id": "...", "text": "..."}')
    text = rec.get("text")
    if not isinstance(text, str) or not text.strip():
        what = "missing" if text is None else ("empty" if isinstance(text, str) else "not a string")
        raise InputError(f"field 'text' is {what}", where=where, hint="give each document a non-empty 'text'")
    title = rec.get("title")
    if title is not None and not isinstance(title, str):
        raise InputError("field 'title' is not a string", where=where, hint="make it a string or drop it")
    rid = rec.get("id", rec.get("_id"))
    if rid is None or rid == "":
        rid = where.rsplit(":", 1)[-1]
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise InputError(f"field 'id' is {type(rid).__name__}, not a string or integer", where=where,
                         hint="use string or integer ids")
    return Document(id=str(rid), text=text.strip(), title=(title or "").strip())


def read_documents(path: str | os.PathLike, *, where: str = "--corpus") -> list[Document]:
    """Read and validate a corpus; the first bad record is an :class:`InputError` (``file:line: what (fix: how)``)."""
    src = Path(path)
    if not src.exists():
        raise InputError(f"corpus {src} does not exist", where=where, hint="check the path")
    if src.is_dir():
        found = [src / n for n in ("corpus.jsonl", "corpus.jsonl.gz") if (src / n).is_file()]
        if not found:
            raise InputError(f"{src} is a folder without corpus.jsonl", where=where,
                             hint="give a JSONL file with a 'text' field per line, or a BEIR folder")
        src = found[0]
    docs: list[Document] = []
    seen: dict[str, str] = {}
    for rec_where, rec in _iter_jsonl(src):
        if isinstance(rec, _Invalid):
            raise InputError(rec.message, where=rec_where, hint=rec.hint)
        doc = _document(rec, rec_where)
        if doc.id in seen:
            raise InputError(f"duplicate document id '{doc.id}' (first at {seen[doc.id]})", where=rec_where,
                             hint="give every document a unique 'id'")
        seen[doc.id] = rec_where
        docs.append(doc)
    if not docs:
        raise InputError(f"the corpus {src} holds no documents", where=where, hint="give at least one document")
    return docs


def corpus_digest(docs: list[Document]) -> str:
    """A short hash of the corpus (ids, titles, texts): a resumed run must read the same documents."""
    h = hashlib.sha256()
    for d in docs:
        for part in (d.id, d.title, d.text):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
    return h.hexdigest()[:16]
