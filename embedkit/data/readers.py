"""Read training pairs from JSONL, CSV, Parquet, a saved HF ``datasets`` folder or a BEIR folder -- validated.

Every stage after this one (miner, trainer) trusts its input, so this is where bad data must be caught, and caught
with a message a user can act on: ``pairs.jsonl:17: 'positive_scores' has 2 values but there are 3 positives
(fix: ...)``. Invalid records are an :class:`~embedkit.errors.InputError` by default. With ``skip_invalid=True``
they are skipped *and counted by reason*; :attr:`PairSet.summary` says what was dropped
(``skipped 3 of 1000 records: 2 missing 'query', 1 bad JSON``). Nothing is dropped silently.

Record schema (JSONL object, CSV row, Parquet / dataset row):

=====================  ===================================================================================
``query``              non-empty string (required)
``positive``           one relevant document (string) -- or --
``positives``          a non-empty list of strings
``negative(s)``        optional string / list of strings (hard negatives)
``positive_scores``    optional list of numbers aligned with the positives (teacher scores)
``negative_scores``    optional list of numbers aligned with the negatives
``instruction``        optional string (task instruction for the query)
``dataset`` / ``task``  optional data set name (for task-homogeneous batches); default: the ``dataset`` argument
``id``                 optional unique id (string or integer)
``query_type``         optional string: how a synthetic query was made (``embedkit synth``)
``doc_id``             optional string: the corpus document a synthetic query came from
=====================  ===================================================================================

In CSV files list-valued fields are JSON arrays inside the cell (``"[""a"", ""b""]"``). ``.gz`` files are read
transparently. A BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) gives one pair per query
with all its relevant (score > 0) documents as positives.

Example:
    >>> import json, os, tempfile
    >>> from embedkit.data.readers import load_pairs, write_pairs
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "pairs.jsonl")
    >>> with open(path, "w") as f:
    ...     _ = f.write(json.dumps({"query": "list files", "positive": "ls lists a directory"}) + "\\n")
    ...     _ = f.write("{not json\\n")
    >>> pairs = load_pairs(path, skip_invalid=True)
    >>> len(pairs), pairs.summary
    (1, 'skipped 1 of 2 records: 1 bad JSON')
    >>> write_pairs(pairs, os.path.join(d, "clean.jsonl"))
    1
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedkit.data.schema import Pair
from embedkit.errors import InputError
from embedkit.utils.io import atomic_file

__all__ = ["PairSet", "load_corpus_texts", "load_pairs", "pair_from_record", "write_pairs"]

logger = logging.getLogger(__name__)

class _Invalid(Exception):
    """One invalid record: ``reason`` is the short category counted in the skip summary."""

    def __init__(self, reason: str, message: str, hint: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.hint = hint


@dataclass
class PairSet(Sequence[Pair]):
    """The pairs read from one source plus an account of what was skipped.

    Behaves like a ``list[Pair]`` (``len``, indexing, iteration).

    Attributes:
        pairs: the valid records, in file order.
        source: the file or folder they came from.
        total: number of records seen (valid + skipped).
        skipped: ``reason -> count`` of the records dropped under ``skip_invalid=True``.
        first_error: the first skipped record's full message (``file:line: ...``), to help fix the file.
    """

    pairs: list[Pair]
    source: str
    total: int
    skipped: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i):  # type: ignore[override]
        return self.pairs[i]

    def __iter__(self) -> Iterator[Pair]:
        return iter(self.pairs)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def summary(self) -> str:
        """One line: ``read 998 pairs from X`` or ``skipped 3 of 1000 records: 2 missing 'query', 1 bad JSON``."""
        if not self.skipped:
            return f"read {len(self.pairs)} pairs from {self.source}"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return f"skipped {self.num_skipped} of {self.total} records: {parts}"


# --------------------------------------------------------------------------------------------------------------
# record validation


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _text_list(obj: dict[str, Any], one: str, many: str, *, required: bool) -> list[str]:
    """Read ``one`` (a string) or ``many`` (a list of strings) from ``obj``."""
    has_one = obj.get(one) is not None
    has_many = obj.get(many) is not None
    if has_one and has_many:
        raise _Invalid(f"both '{one}' and '{many}'", f"record has both '{one}' and '{many}'",
                       f"give either '{one}' (a string) or '{many}' (a list)")
    if not has_one and not has_many:
        if required:
            raise _Invalid(f"missing '{one}'", f"field '{one}' (or '{many}') is missing",
                           f"add a non-empty '{one}' string or a '{many}' list")
        return []
    if has_one:
        value = obj[one]
        if not isinstance(value, str):
            raise _Invalid(f"wrong type of '{one}'", f"field '{one}' is {type(value).__name__}, not a string",
                           f"make '{one}' a string (use '{many}' for a list)")
        if not value.strip():
            raise _Invalid(f"empty '{one}'", f"field '{one}' is empty", "give it text or remove the record")
        return [value]
    values = obj[many]
    if not isinstance(values, list):
        raise _Invalid(f"wrong type of '{many}'", f"field '{many}' is {type(values).__name__}, not a list",
                       f"make '{many}' a list of strings")
    if required and not values:
        raise _Invalid(f"empty '{many}'", f"field '{many}' is an empty list", "give at least one document")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise _Invalid(f"wrong type in '{many}'", f"'{many}[{i}]' is {type(v).__name__}, not a string",
                           f"make every item of '{many}' a string")
        if not v.strip():
            raise _Invalid(f"empty item in '{many}'", f"'{many}[{i}]' is empty", "remove empty documents")
    return list(values)


def _scores(obj: dict[str, Any], key: str, n: int, what: str) -> list[float] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(_is_number(x) for x in value):
        raise _Invalid(f"wrong type of '{key}'", f"field '{key}' must be a list of finite numbers",
                       f"give one number per {what[:-1]}")
    if len(value) != n:
        raise _Invalid(f"'{key}' length mismatch", f"'{key}' has {len(value)} values but there are {n} {what}",
                       f"give exactly one score per {what[:-1]}, in the same order")
    return [float(x) for x in value]


def _optional_str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"wrong type of '{key}'", f"field '{key}' is {type(value).__name__}, not a string",
                       f"make '{key}' a string or drop it")
    return value


def pair_from_record(obj: Any, *, dataset: str | None = None) -> Pair:
    """Validate one decoded record and build a :class:`Pair` (raises an internal error carrying the reason)."""
    if not isinstance(obj, dict):
        raise _Invalid("not an object", f"record is a JSON {type(obj).__name__}, not an object",
                       'use {"query": "...", "positive": "..."}')
    query = obj.get("query")
    if query is None:
        raise _Invalid("missing 'query'", "field 'query' is missing", "add a non-empty 'query' string")
    if not isinstance(query, str):
        raise _Invalid("wrong type of 'query'", f"field 'query' is {type(query).__name__}, not a string",
                       "make 'query' a string")
    if not query.strip():
        raise _Invalid("empty 'query'", "field 'query' is empty", "give the query text or remove the record")
    positives = _text_list(obj, "positive", "positives", required=True)
    negatives = _text_list(obj, "negative", "negatives", required=False)
    pos_scores = _scores(obj, "positive_scores", len(positives), "positives")
    neg_scores = _scores(obj, "negative_scores", len(negatives), "negatives")
    instruction = _optional_str(obj, "instruction")
    name = _optional_str(obj, "dataset")
    task = _optional_str(obj, "task")
    if name is not None and task is not None and name != task:
        raise _Invalid("both 'dataset' and 'task'", f"'dataset' ({name!r}) and 'task' ({task!r}) disagree",
                       "give one of them")
    name = name or task or dataset or "default"
    rid = obj.get("id")
    if rid is not None:
        if isinstance(rid, bool) or not isinstance(rid, (str, int)):
            raise _Invalid("wrong type of 'id'", f"field 'id' is {type(rid).__name__}, not a string",
                           "make 'id' a string or an integer")
        rid = str(rid)
        if not rid.strip():
            raise _Invalid("empty 'id'", "field 'id' is empty", "give a non-empty id or drop the field")
    return Pair(query=query, positives=positives, negatives=negatives, positive_scores=pos_scores,
                negative_scores=neg_scores, instruction=instruction, dataset=name, id=rid,
                query_type=_optional_str(obj, "query_type"), doc_id=_optional_str(obj, "doc_id"))


# --------------------------------------------------------------------------------------------------------------
# formats: each yields (where, record-or-_Invalid)

_Rec = tuple[str, Any]


def _open_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise InputError(f"cannot read file: {exc}", where=str(path), hint="check the file is readable") from None


def _iter_text_lines(path: Path) -> Iterator[tuple[str, str | _Invalid]]:
    """``(file:line, decoded line)`` for every line (``.gz`` ok); a line that is not UTF-8 is an :class:`_Invalid`."""
    for lineno, raw in enumerate(_open_bytes(path).splitlines(), start=1):
        where = f"{path}:{lineno}"
        try:
            yield where, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield where, _Invalid("non-UTF-8 bytes", f"line is not valid UTF-8 (byte {exc.start})",
                                  "re-encode the file as UTF-8")


def _iter_jsonl(path: Path) -> Iterator[_Rec]:
    for where, line in _iter_text_lines(path):
        if isinstance(line, _Invalid):
            yield where, line
            continue
        if not line.strip():
            continue
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, _Invalid("bad JSON", f"invalid JSON ({exc.msg} at column {exc.colno})",
                                  "fix the JSON on this line (one object per line)")


def _csv_cell(name: str, value: str) -> Any:
    if value == "":
        return None
    if name in ("positives", "negatives", "positive_scores", "negative_scores"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise _Invalid(f"bad JSON in '{name}'", f"CSV cell '{name}' is not a JSON array",
                           f'write lists as JSON, e.g. ["a", "b"]') from None
    return value


def _iter_csv(path: Path, *, required: str = "query", cell: Callable[[str, str], Any] = _csv_cell,
              header_hint: str = "name the columns query, positive (or positives), ...") -> Iterator[_Rec]:
    """CSV/TSV rows (``.gz`` ok) as dicts; ``where`` is the line a row starts on, so quoted newlines keep the
    numbering right. The header must name ``required``; ``cell(column, value)`` converts each cell (pairs: JSON
    lists in list columns, ``""`` -> ``None``). :mod:`embedkit.data.texts` reads text files through it too."""
    text = _open_bytes(path).decode("utf-8", errors="surrogateescape")
    delimiter = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"cannot parse the CSV header: {exc}", where=f"{path}:1", hint="fix the header") from None
    header = [h.strip() for h in header]
    if required not in header:
        raise InputError(f"the CSV header has no '{required}' column (columns: {', '.join(header)})",
                         where=f"{path}:1", hint=header_hint)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield f"{path}:{start}", _Invalid("bad CSV", f"cannot parse the row: {exc}", "fix the quoting")
            continue
        where = f"{path}:{start}"
        if not any(c.strip() for c in row):
            continue
        if any("\udc80" <= ch <= "\udcff" for c in row for ch in c):
            yield where, _Invalid("non-UTF-8 bytes", "row is not valid UTF-8", "re-encode the file as UTF-8")
            continue
        if len(row) != len(header):
            yield where, _Invalid("wrong column count", f"row has {len(row)} columns, the header has {len(header)}",
                                  "quote cells that contain the delimiter")
            continue
        try:
            yield where, {k: cell(k, v) for k, v in zip(header, row)}
        except _Invalid as exc:
            yield where, exc


def _rows_to_records(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in rows:
        out = {}
        for k, v in row.items():
            if hasattr(v, "tolist"):  # numpy arrays from Arrow list columns
                v = v.tolist()
            out[k] = v
        yield out


def _iter_parquet(path: Path) -> Iterator[_Rec]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types for corrupt files
        raise InputError(f"cannot read Parquet file: {exc}", where=str(path), hint="check the file") from None
    for i, rec in enumerate(_rows_to_records(table.to_pylist()), start=1):
        yield f"{path}:row {i}", rec


def _iter_hf_dataset(path: Path) -> Iterator[_Rec]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"cannot load the saved dataset: {exc}", where=str(path),
                         hint="save it with Dataset.save_to_disk(path)") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise InputError(f"the DatasetDict has no 'train' split (splits: {', '.join(ds)})", where=str(path),
                             hint="save the split you want with Dataset.save_to_disk")
        ds = ds["train"]
    assert isinstance(ds, Dataset)
    for i, rec in enumerate(_rows_to_records(iter(ds)), start=1):
        yield f"{path}:row {i}", rec


def _beir_pairs(path: Path, dataset: str | None, split: str) -> PairSet:
    from embedkit.data.beir import load_beir

    data = load_beir(path, split=split)
    pairs: list[Pair] = []
    for qid, text in data.queries.items():
        rel = [did for did, score in data.qrels.get(qid, {}).items() if score > 0]
        if not rel:
            continue  # judged only non-relevant documents: no training pair
        pairs.append(Pair(query=text, positives=[data.doc_text(d) for d in rel], dataset=dataset or data.name,
                          id=qid))
    if not pairs:
        raise InputError("no query has a relevant document (score > 0)", where=str(path),
                         hint="check qrels scores")
    return PairSet(pairs=pairs, source=str(path), total=len(pairs))


def _is_beir(path: Path) -> bool:
    return path.is_dir() and (path / "qrels").is_dir() and any(
        (path / n).is_file() for n in ("corpus.jsonl", "corpus.jsonl.gz"))


#: file suffix (after an optional ``.gz``) -> reader; shared by pairs and text files (:mod:`embedkit.data.texts`)
_FILE_FORMATS = ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "csv"),
                 (".parquet", "parquet"))


def _file_format(path: Path) -> str | None:
    """The reader of a file by its suffix (``"jsonl"``, ``"csv"``, ``"parquet"``), or ``None`` for any other."""
    name = path.name.lower().removesuffix(".gz")
    return next((fmt for suffix, fmt in _FILE_FORMATS if name.endswith(suffix)), None)


def _format_of(path: Path) -> str:
    if path.is_dir():
        if _is_beir(path):
            return "beir"
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "hf"
        raise InputError(f"{path} is a folder but neither a BEIR folder nor a saved HF dataset", where=str(path),
                         hint="give corpus.jsonl + queries.jsonl + qrels/, or a Dataset.save_to_disk folder")
    fmt = _file_format(path)
    if fmt is not None:
        return fmt
    raise InputError(f"unknown pairs format '{path.name}'", where=str(path),
                     hint="use .jsonl, .csv, .tsv, .parquet (optionally .gz), a BEIR folder or a saved HF dataset")


def load_pairs(path: str | os.PathLike, *, skip_invalid: bool = False, dataset: str | None = None,
               split: str = "train") -> PairSet:
    """Read and validate training pairs.

    Args:
        path: a ``.jsonl`` / ``.csv`` / ``.tsv`` / ``.parquet`` file (``.gz`` accepted), a folder written by
            ``datasets.Dataset.save_to_disk``, or a BEIR folder.
        skip_invalid: skip invalid records (counted by reason in :attr:`PairSet.skipped`) instead of raising.
        dataset: data set name for records that do not name one (default ``"default"``; BEIR: the folder name).
        split: the qrels split of a BEIR folder. A folder without ``qrels/<split>.tsv`` is an
            :class:`InputError` (there is no fall-back to the ``test`` split: that would train on test data).

    Returns:
        A :class:`PairSet` (a sequence of :class:`Pair`) with the skip summary.

    Raises:
        InputError: the first invalid record as ``file:line: what (fix: how)``, or a file-level problem (missing
            file, unknown format, no valid record). Duplicate ids are invalid records too.
    """
    src = Path(path)
    if not src.exists():
        raise InputError(f"pairs file {src} does not exist", hint="check the path")
    fmt = _format_of(src)
    if fmt == "beir":
        # no fall-back to another split: a folder without qrels/train.tsv used to be read from qrels/test.tsv,
        # which trained on the test set without a word (a shipped recipe did)
        if not (src / "qrels" / f"{split}.tsv").is_file():
            have = sorted(p.stem for p in (src / "qrels").glob("*.tsv"))
            raise InputError(
                f"the BEIR folder has no '{split}' split: qrels/{split}.tsv is missing (splits: "
                f"{', '.join(have) or 'none'})", where=str(src),
                hint=f"add qrels/{split}.tsv, or name the split to read (a recipe data set's 'split' key, "
                     "load_pairs(split=...)) -- never the split you evaluate on",
            )
        return _beir_pairs(src, dataset, split)
    records = {"jsonl": _iter_jsonl, "csv": _iter_csv, "parquet": _iter_parquet, "hf": _iter_hf_dataset}[fmt](src)
    pairs: list[Pair] = []
    skipped: Counter[str] = Counter()
    first_error: str | None = None
    seen_ids: dict[str, str] = {}
    total = 0
    for where, rec in records:
        total += 1
        try:
            if isinstance(rec, _Invalid):
                raise rec
            pair = pair_from_record(rec, dataset=dataset)
            if pair.id is not None:
                if pair.id in seen_ids:
                    raise _Invalid("duplicate id", f"duplicate id '{pair.id}' (first at {seen_ids[pair.id]})",
                                   "make every 'id' unique")
                seen_ids[pair.id] = where
        except _Invalid as exc:
            err = InputError(exc.message, where=where, hint=exc.hint)
            if not skip_invalid:
                raise err from None
            skipped[exc.reason] += 1
            first_error = first_error or str(err)
            continue
        pairs.append(pair)
    result = PairSet(pairs=pairs, source=str(src), total=total, skipped=skipped, first_error=first_error)
    if not pairs:
        if skipped:
            raise InputError(f"no valid record ({result.summary}; first: {first_error})", where=str(src),
                             hint="fix the file")
        raise InputError("holds no pairs", where=str(src), hint="give at least one record")
    if skipped:
        logger.warning("%s", result.summary)
    return result


def write_pairs(pairs: Iterable[Pair], path: str | os.PathLike) -> int:
    """Write pairs as JSONL (the format :func:`load_pairs` reads), atomically; ``.gz`` paths are gzipped.

    Returns the number of records written.
    """
    out = Path(path)
    n = 0
    with atomic_file(out) as tmp:
        raw = open(tmp, "wb")
        stream: Any = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if out.name.endswith(".gz") else raw
        try:
            for pair in pairs:
                stream.write((json.dumps(pair.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1
        finally:
            if stream is not raw:
                stream.close()
            raw.close()
    return n


def load_corpus_texts(path: str | os.PathLike, *, text_field: str = "text") -> list[str]:
    """Documents for mining from a JSONL file (``text``, optional ``title`` joined as ``title + " " + text``;
    ``.gz`` accepted) or a BEIR folder (its whole corpus), with ``file:line`` errors."""
    src = Path(path)
    if not src.exists():
        raise InputError(f"corpus {src} does not exist", where="--corpus", hint="check the path")
    if src.is_dir():
        if not _is_beir(src):
            raise InputError(f"{src} is a folder but not a BEIR folder", where=str(src),
                             hint="give a JSONL file with a 'text' field or a BEIR folder")
        from embedkit.data.beir import _find, _read_records

        texts = []
        for where, _, obj in _read_records(_find(src, "corpus"), "document"):
            title = obj.get("title") or ""
            text = f"{title} {obj['text']}".strip() if title else obj["text"]
            if not text.strip():
                raise InputError("document has empty text", where=where, hint="remove it or give it text")
            texts.append(text)
        return texts
    texts = []
    for where, rec in _iter_jsonl(src):
        if isinstance(rec, _Invalid):
            raise InputError(rec.message, where=where, hint=rec.hint)
        if not isinstance(rec, dict):
            raise InputError("line is not a JSON object", where=where, hint=f'use {{"{text_field}": "..."}}')
        text = rec.get(text_field)
        if not isinstance(text, str) or not text.strip():
            what = "missing" if text is None else ("empty" if isinstance(text, str) else "not a string")
            raise InputError(f"field '{text_field}' is {what}", where=where, hint=f"give a non-empty '{text_field}'")
        title = rec.get("title")
        if title is not None and not isinstance(title, str):
            raise InputError("field 'title' is not a string", where=where, hint="make it a string or drop it")
        texts.append(f"{title} {text}".strip() if title else text)
    if not texts:
        raise InputError("the corpus holds no documents", where=str(src), hint="give at least one document")
    return texts
