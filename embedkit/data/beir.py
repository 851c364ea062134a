"""Read and write BEIR retrieval folders, with ``file:line`` errors for every defect.

A BEIR folder (the layout of the BEIR benchmark, also used by mteb and Tevatron) holds::

    corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   (or corpus.jsonl.gz)
    queries.jsonl       {"_id": "q1", "text": "..."}                   (or queries.jsonl.gz)
    qrels/test.tsv      query-id <TAB> corpus-id <TAB> score            (header line first)

Why not ``beir.datasets.data_loader.GenericDataLoader``? It skips nothing and checks nothing: a broken JSON line
raises a bare ``JSONDecodeError`` without a line number, a qrel naming a missing document silently scores as a
miss, and duplicate ids overwrite each other. Here every such defect is an :class:`~embedkit.errors.InputError`
that names the file and line. As in BEIR's loader, :attr:`BeirData.queries` keeps only the queries that the
split's qrels judge (a ``queries.jsonl`` usually serves several splits).

Example:
    >>> import tempfile, os
    >>> from embedkit.data.beir import BeirData, load_beir, write_beir
    >>> data = BeirData(corpus={"d1": {"title": "ls", "text": "list directory contents"}},
    ...                 queries={"q1": "how to list files"}, qrels={"q1": {"d1": 1}}, name="tiny")
    >>> folder = os.path.join(tempfile.mkdtemp(), "tiny")
    >>> write_beir(data, folder)
    >>> load_beir(folder).qrels
    {'q1': {'d1': 1}}
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedkit.errors import InputError
from embedkit.utils.io import atomic_dir

__all__ = ["BeirData", "load_beir", "write_beir"]


@dataclass
class BeirData:
    """One split of a BEIR retrieval data set, held in memory.

    Attributes:
        corpus: ``doc_id -> {"title": str, "text": str}`` (title may be ``""``).
        queries: ``query_id -> text``, only the queries judged in :attr:`qrels`.
        qrels: ``query_id -> {doc_id: relevance}`` (relevance ``> 0`` means relevant; ``0`` is a judged
            non-relevant document, as in TREC).
        name: the data set's name (the folder name when loaded).
        split: the qrels split this object holds.
    """

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = "beir"
    split: str = "test"
    #: where the data came from (a folder path), for messages; ``None`` for in-memory data
    source: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.source or f"BeirData({self.name!r})"
        if not self.corpus:
            raise InputError("the corpus is empty", where=where, hint="add at least one document")
        if not self.qrels:
            raise InputError(f"no qrels for split '{self.split}'", where=where, hint="add relevance judgements")
        for qid, docs in self.qrels.items():
            if qid not in self.queries:
                raise InputError(f"qrels name query '{qid}' that is not in the queries (dangling)", where=where,
                                 hint="add the query or drop its qrels")
            for did in docs:
                if did not in self.corpus:
                    raise InputError(f"qrels name document '{did}' that is not in the corpus (dangling)",
                                     where=where, hint="add the document or drop the qrel")

    def doc_text(self, doc_id: str, sep: str = " ") -> str:
        """The text a retriever embeds for a document: ``title + sep + text`` (BEIR's convention), or the text
        alone when the title is empty."""
        doc = self.corpus[doc_id]
        title = doc.get("title") or ""
        return f"{title}{sep}{doc['text']}".strip() if title else doc["text"].strip()

    def subset(self, max_queries: int | None = None, max_corpus: int | None = None, *, seed: int = 0) -> BeirData:
        """A smaller, deterministic copy for quick evaluation (e.g. during training).

        Keeps ``max_queries`` queries (a seeded sample), every document judged for them, then fills the corpus up
        to ``max_corpus`` with a seeded sample of the other documents (the distractors). The corpus can exceed
        ``max_corpus`` when the kept queries alone judge more documents.
        """
        import random

        rng = random.Random(seed)
        qids = sorted(self.qrels)
        if max_queries is not None and max_queries < len(qids):
            qids = sorted(rng.sample(qids, max_queries))
        keep = {d for q in qids for d in self.qrels[q]}
        others = sorted(set(self.corpus) - keep)
        if max_corpus is not None and len(keep) + len(others) > max_corpus:
            others = rng.sample(others, max(0, max_corpus - len(keep)))
        keep.update(others)
        return BeirData(corpus={d: v for d, v in self.corpus.items() if d in keep},
                        queries={q: self.queries[q] for q in qids}, qrels={q: dict(self.qrels[q]) for q in qids},
                        name=self.name, split=self.split, source=self.source)

    @property
    def num_relevant(self) -> int:
        """Number of (query, document) pairs judged relevant (score > 0)."""
        return sum(1 for docs in self.qrels.values() for s in docs.values() if s > 0)


def _find(folder: Path, stem: str) -> Path:
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{stem}.jsonl is missing", where=str(folder),
                     hint=f"a BEIR folder needs {stem}.jsonl (or {stem}.jsonl.gz), queries.jsonl and qrels/<split>.tsv")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` of a (possibly gzipped) UTF-8 file, with a file:line error on bad bytes."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file: {exc}", where=str(path), hint="check the file is readable") from None
    for lineno, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            yield lineno, line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("line is not valid UTF-8", where=f"{path}:{lineno}",
                             hint="re-encode the file as UTF-8") from None


def _read_records(path: Path, kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield ``(where, id, record)`` for each JSONL record, validating ``_id`` and ``text``."""
    seen: dict[str, int] = {}
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg})", where=where, hint="fix the JSON on this line") from None
        if not isinstance(obj, dict):
            raise InputError("line is not a JSON object", where=where, hint='use {"_id": "...", "text": "..."}')
        rid = obj.get("_id")
        if rid is None or (isinstance(rid, str) and not rid.strip()):
            raise InputError(f"{kind} record has no '_id'", where=where, hint="add a unique non-empty '_id'")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise InputError(f"'_id' is {type(rid).__name__}, not a string", where=where, hint="make '_id' a string")
        rid = str(rid)
        if rid in seen:
            raise InputError(f"duplicate _id '{rid}' (first on line {seen[rid]})", where=where,
                             hint="make every '_id' unique")
        seen[rid] = lineno
        if "text" not in obj:
            raise InputError(f"{kind} record '{rid}' has no 'text'", where=where, hint="add a 'text' string")
        if not isinstance(obj["text"], str):
            raise InputError(f"'text' of '{rid}' is {type(obj['text']).__name__}, not a string", where=where,
                             hint="make 'text' a string")
        title = obj.get("title", "")
        if title is None:
            title = ""
        if not isinstance(title, str):
            raise InputError(f"'title' of '{rid}' is {type(title).__name__}, not a string", where=where,
                             hint="make 'title' a string or drop it")
        obj["title"] = title
        yield where, rid, obj


def _read_qrels(path: Path) -> list[tuple[str, str, str, int]]:
    """``(where, query_id, doc_id, score)`` rows of a qrels TSV (header optional)."""
    rows: list[tuple[str, str, str, int]] = []
    seen: dict[tuple[str, str], int] = {}
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if lineno == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue  # header
        if len(cols) == 4:  # TREC style: qid 0 docid score
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise InputError(f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(cols)}",
                             where=where, hint="separate columns with tabs")
        qid, did, score_s = (c.strip() for c in cols)
        if not qid or not did:
            raise InputError("empty query-id or corpus-id", where=where, hint="fill both ids")
        try:
            score = int(float(score_s))
            if float(score_s) != score:
                raise ValueError
        except ValueError:
            raise InputError(f"score '{score_s}' is not an integer", where=where,
                             hint="use integer relevance grades (0 = not relevant, 1+ = relevant)") from None
        if (qid, did) in seen:
            raise InputError(f"duplicate qrel ({qid}, {did}) (first on line {seen[qid, did]})", where=where,
                             hint="keep one line per (query, document)")
        seen[qid, did] = lineno
        rows.append((where, qid, did, score))
    return rows


def load_beir(folder: str | os.PathLike, split: str = "test", *, name: str | None = None) -> BeirData:
    """Read one split of a BEIR folder.

    Args:
        folder: folder holding ``corpus.jsonl``, ``queries.jsonl`` (``.gz`` accepted) and ``qrels/<split>.tsv``.
        split: which qrels file to read.
        name: data set name (default: the folder's name).

    Returns:
        A validated :class:`BeirData`.

    Raises:
        InputError: missing folder/file, invalid UTF-8 or JSON, missing ``_id``/``text``, duplicate ids,
            qrels naming unknown queries or documents (dangling), empty corpus or qrels -- always with
            ``file:line`` when a line is at fault.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"BEIR folder {root} does not exist", hint="pass a folder with corpus.jsonl, queries.jsonl, qrels/")
    corpus_path = _find(root, "corpus")
    queries_path = _find(root, "queries")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv")) if (root / "qrels").is_dir() else []
        raise InputError(f"qrels/{split}.tsv is missing", where=str(root),
                         hint=f"available splits: {', '.join(have)}" if have else "add qrels/<split>.tsv")
    corpus: dict[str, dict[str, str]] = {}
    for where, did, obj in _read_records(corpus_path, "document"):
        if not obj["text"].strip() and not obj["title"].strip():
            raise InputError(f"document '{did}' has empty text and title", where=where,
                             hint="remove the document or give it text")
        corpus[did] = {"title": obj["title"], "text": obj["text"]}
    if not corpus:
        raise InputError("the corpus is empty", where=str(corpus_path), hint="add at least one document")
    all_queries: dict[str, str] = {}
    for where, qid, obj in _read_records(queries_path, "query"):
        if not obj["text"].strip():
            raise InputError(f"query '{qid}' is empty", where=where, hint="remove the query or give it text")
        all_queries[qid] = obj["text"]
    qrels: dict[str, dict[str, int]] = {}
    for where, qid, did, score in _read_qrels(qrels_path):
        if qid not in all_queries:
            raise InputError(f"qrel names query '{qid}' that is not in {queries_path.name} (dangling)",
                             where=where, hint="add the query or remove this line")
        if did not in corpus:
            raise InputError(f"qrel names document '{did}' that is not in {corpus_path.name} (dangling)",
                             where=where, hint="add the document or remove this line")
        qrels.setdefault(qid, {})[did] = score
    if not qrels:
        raise InputError("no relevance judgements", where=str(qrels_path), hint="add query-id/corpus-id/score lines")
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}
    return BeirData(corpus=corpus, queries=queries, qrels=qrels, name=name or root.resolve().name, split=split,
                    source=str(root))


def write_beir(data: BeirData, folder: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Write ``data`` as a BEIR folder, atomically (a crash leaves no partial folder).

    Writes ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<data.split>.tsv`` (with the standard header).
    Refuses an existing ``folder`` unless ``overwrite``.
    """
    for qid, docs in data.qrels.items():
        for rid in (qid, *docs):
            if any(c in rid for c in "\t\r\n"):
                raise InputError(f"id {rid!r} contains a tab or newline", where=f"BeirData({data.name!r})",
                                 hint="ids are written to a TSV file; remove tabs and newlines from them")
    with atomic_dir(folder, overwrite=overwrite) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
            for did, doc in data.corpus.items():
                f.write(json.dumps({"_id": did, "title": doc.get("title", ""), "text": doc["text"]},
                                   ensure_ascii=False) + "\n")
        with open(tmp / "queries.jsonl", "w", encoding="utf-8") as f:
            for qid, text in data.queries.items():
                f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
        (tmp / "qrels").mkdir()
        with open(tmp / "qrels" / f"{data.split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for qid, docs in data.qrels.items():
                for did, score in docs.items():
                    f.write(f"{qid}\t{did}\t{int(score)}\n")
