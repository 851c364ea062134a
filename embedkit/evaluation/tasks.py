"""mteb tasks from local files, and hub tasks that fail fast when the hub cannot be reached.

mteb's tasks download their data from the Hugging Face hub. To evaluate offline (CI, air-gapped clusters, your
own held-out data) embedkit turns local files into real mteb tasks, so mteb's own scoring and result format
apply:

* a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) -> an ``AbsTaskRetrieval``;
* an STS pair file (JSONL, TSV or CSV with ``sentence1``, ``sentence2``, ``score``) -> an ``AbsTaskSTS``.

Each local task is a subclass created per data set with its own ``TaskMetadata`` (name = the folder/file name;
dataset revision = a hash of the files, so results record exactly which data produced them) whose
``load_data`` fills ``self.dataset`` from the validated files instead of the hub.

Hub tasks are looked up by name with ``mteb.get_tasks``. Their data is loaded *before* any checkpoint, and when
the hub is unreachable -- ``HF_HUB_OFFLINE=1``, or no answer from the hub within ~2 s -- the run stops with one
line that says so and how to run locally instead (mteb would otherwise spend ~23 s in retries per task).

Example:
    >>> from embedkit.evaluation.tasks import beir_task
    >>> from embedkit.evaluation import manpages_path
    >>> task = beir_task(manpages_path())
    >>> task.metadata.name, task.metadata.main_score
    ('manpages', 'ndcg_at_10')
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from embedkit.data.beir import BeirData, load_beir
from embedkit.errors import InputError

__all__ = ["StsData", "beir_task", "hub_is_offline", "hub_tasks", "load_sts", "sts_task"]

_RUN_LOCALLY = "evaluate local data instead: --beir DIR (BEIR folder) or --sts FILE (sentence1/sentence2/score)"


def _fingerprint(paths: Sequence[Path]) -> str:
    """Short content hash of files (the local task's dataset 'revision')."""
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:12]


def _task_name(raw: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("_.")
    return name or "local"


def _metadata(name: str, description: str, task_type: str, main_score: str, revision: str, split: str, path: str):
    from mteb import TaskMetadata

    return TaskMetadata(
        name=name,
        description=description,
        reference=None,
        dataset={"path": path, "revision": revision},
        type=task_type,
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score=main_score,
        date=None,
        domains=None,
        task_subtypes=None,
        license="not specified",
        annotations_creators=None,
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )


# --------------------------------------------------------------------------------------------------- BEIR folders
def beir_task(folder: str | os.PathLike | BeirData, *, split: str = "test", name: str | None = None):
    """An mteb retrieval task (``AbsTaskRetrieval`` subclass instance) over a local BEIR folder.

    Args:
        folder: a BEIR folder (validated by :func:`embedkit.data.beir.load_beir`) or an already loaded
            :class:`~embedkit.data.beir.BeirData`.
        split: the qrels split to evaluate.
        name: task name in results and reports (default: the folder name).

    Returns:
        A task object to pass to ``mteb.evaluate``; its main score is ``ndcg_at_10``.
    """
    from datasets import Dataset
    from mteb.abstasks import AbsTaskRetrieval

    if isinstance(folder, BeirData):
        data = folder
        blob = json.dumps([data.corpus, data.queries, data.qrels], sort_keys=True).encode()
        revision = hashlib.sha1(blob).hexdigest()[:12]
        path = f"local/{data.name}"
    else:
        data = load_beir(folder, split=split)
        root = Path(folder)
        files = [p for p in root.iterdir() if p.is_file() and p.name.startswith(("corpus.", "queries."))]
        revision = _fingerprint([*files, root / "qrels" / f"{split}.tsv"])
        path = str(root.resolve())
    task_name = _task_name(name or data.name)
    metadata = _metadata(
        task_name,
        f"Local BEIR folder {path} (split {data.split}): {len(data.queries)} queries, {len(data.corpus)} documents.",
        "Retrieval", "ndcg_at_10", revision, data.split, path,
    )

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        ids = list(data.corpus)
        corpus = Dataset.from_dict({
            "id": ids,
            "title": [data.corpus[d].get("title", "") or "" for d in ids],
            "text": [data.corpus[d]["text"] for d in ids],
        })
        qids = list(data.queries)
        queries = Dataset.from_dict({"id": qids, "text": [data.queries[q] for q in qids]})
        relevant = {q: dict(docs) for q, docs in data.qrels.items()}
        self.dataset = {"default": {data.split: {"corpus": corpus, "queries": queries, "relevant_docs": relevant,
                                                 "top_ranked": None}}}
        self.data_loaded = True

    cls = type(f"LocalBeir_{task_name}", (AbsTaskRetrieval,), {"metadata": metadata, "load_data": load_data,
                                                             "__module__": __name__})
    task = cls()
    task.beir_data = data  # handy for callers (e.g. the exact scorer); not used by mteb
    return task


# ------------------------------------------------------------------------------------------------ STS pair files
@dataclass
class StsData:
    """Sentence pairs with gold similarity scores (a local STS test set)."""

    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]
    name: str = "sts"


def _sts_row(row: dict[str, Any], where: str) -> tuple[str, str, float]:
    out: list[str] = []
    for key in ("sentence1", "sentence2"):
        val = row.get(key)
        if val is None:
            raise InputError(f"field '{key}' is missing", where=where,
                             hint="each row needs sentence1, sentence2 and score")
        if not isinstance(val, str) or not val.strip():
            raise InputError(f"field '{key}' must be a non-empty string", where=where, hint="fix or remove the row")
        out.append(val)
    raw = row.get("score")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise InputError("field 'score' is missing", where=where, hint="add a numeric 'score'")
    if isinstance(raw, bool):
        raise InputError("field 'score' is a boolean, not a number", where=where, hint="use a number")
    try:
        score = float(raw)
    except (TypeError, ValueError):
        raise InputError(f"score {raw!r} is not a number", where=where, hint="use a number, e.g. 3.5") from None
    if score != score or score in (float("inf"), float("-inf")):
        raise InputError(f"score {raw!r} is not finite", where=where, hint="use a finite number")
    return out[0], out[1], score


def load_sts(path: str | os.PathLike, *, name: str | None = None) -> StsData:
    """Read an STS pair file: JSONL (``{"sentence1", "sentence2", "score"}`` per line) or TSV/CSV with a header
    naming those columns. Errors name ``file:line``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"STS file {p} does not exist", hint="pass a .jsonl/.tsv/.csv file with sentence1, sentence2, score")
    raw = p.read_bytes()
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    suffix = p.suffix.lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("line is not valid UTF-8", where=f"{p}:{line}", hint="re-encode the file as UTF-8") from None
    if suffix in (".jsonl", ".json", ".ndjson"):
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON ({exc.msg})", where=where, hint="fix the JSON on this line") from None
            if not isinstance(obj, dict):
                raise InputError("line is not a JSON object", where=where,
                                 hint='use {"sentence1": "...", "sentence2": "...", "score": 4.0}')
            a, b, sc = _sts_row(obj, where)
            s1.append(a), s2.append(b), scores.append(sc)
    elif suffix in (".tsv", ".csv", ".txt"):
        delim = "," if suffix == ".csv" else "\t"
        reader = csv.reader(io.StringIO(text), delimiter=delim, quoting=csv.QUOTE_MINIMAL if delim == "," else csv.QUOTE_NONE)
        header: list[str] | None = None
        for row in reader:
            lineno = reader.line_num
            if not any(c.strip() for c in row):
                continue
            if header is None:
                header = [c.strip().lower() for c in row]
                missing = [c for c in ("sentence1", "sentence2", "score") if c not in header]
                if missing:
                    raise InputError(f"header lacks column(s) {', '.join(missing)}", where=f"{p}:{lineno}",
                                     hint="first line must name the columns: sentence1, sentence2, score")
                continue
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} columns, got {len(row)}", where=f"{p}:{lineno}",
                                 hint=f"separate columns with {'commas' if delim == ',' else 'tabs'}")
            a, b, sc = _sts_row(dict(zip(header, row)), f"{p}:{lineno}")
            s1.append(a), s2.append(b), scores.append(sc)
    else:
        raise InputError(f"unsupported STS file type '{p.suffix}'", where=str(p), hint="use .jsonl, .tsv or .csv")
    if len(scores) < 2:
        raise InputError(f"{p} holds {len(scores)} pair(s); a correlation needs at least 2", where=str(p),
                         hint="add more sentence pairs")
    if len(set(scores)) < 2:
        raise InputError("all gold scores are equal; a correlation is undefined", where=str(p),
                         hint="use pairs with different similarity scores")
    stem = p.name.split(".")[0]
    return StsData(s1, s2, scores, name=name or stem)


def sts_task(path: str | os.PathLike, *, name: str | None = None):
    """An mteb STS task (``AbsTaskSTS`` subclass instance) over a local pair file; main score ``cosine_spearman``."""
    from datasets import Dataset
    from mteb.abstasks import AbsTaskSTS

    data = load_sts(path, name=name)
    task_name = _task_name(data.name)
    p = Path(path)
    metadata = _metadata(task_name, f"Local STS file {p.resolve()}: {len(data.scores)} pairs.", "STS",
                         "cosine_spearman", _fingerprint([p]), "test", str(p.resolve()))

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        if self.data_loaded:
            return
        ds = Dataset.from_dict({"sentence1": data.sentence1, "sentence2": data.sentence2, "score": data.scores})
        self.dataset = {"default": {"test": ds}}
        self.data_loaded = True

    cls = type(f"LocalSts_{task_name}", (AbsTaskSTS,), {
        "metadata": metadata, "load_data": load_data, "__module__": __name__,
        # mteb rescales gold scores to [0, 1] with these; correlations do not depend on it
        "min_score": min(data.scores), "max_score": max(data.scores),
    })
    task = cls()
    task.sts_data = data
    return task


# ------------------------------------------------------------------------------------------------------ hub tasks
def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_is_offline(timeout: float = 2.0) -> str | None:
    """Why the Hugging Face hub cannot be used right now, or ``None`` if it answers.

    Checks the offline switches first (instant), then tries a TCP connection to the hub endpoint in a daemon
    thread bounded by ``timeout`` (DNS lookups have no timeout of their own).
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(var):
            return f"{var}=1 is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{host} is unreachable ({exc.__class__.__name__})")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.2)
    return result[0] if result else f"{host} did not answer within {timeout:.0f} s"


def hub_tasks(names: Sequence[str], *, check_hub: bool = True) -> list[Any]:
    """mteb task objects for task names, with their data loaded (so an unreachable hub fails here, fast).

    Raises:
        InputError: unknown task name; or its data is not available locally and the hub cannot be reached.
    """
    import mteb

    tasks = []
    for raw in names:
        name = raw.strip()
        try:
            tasks.extend(mteb.get_tasks(tasks=[name]))
        except KeyError as exc:
            msg = str(exc).strip("\"'")
            at = msg.lower().find("did you mean")
            hint = msg[at:].rstrip("\"'") if at >= 0 else "check the name (mteb.get_tasks() lists them)"
            raise InputError(f"unknown MTEB task '{name}'", where="--tasks", hint=hint) from None
    offline_reason: str | None = None
    if check_hub and tasks:
        offline_reason = hub_is_offline()
    for task in tasks:
        meta = task.metadata
        repo = meta.dataset.get("path", "?")
        if offline_reason and not _env_true("HF_HUB_OFFLINE") and not _env_true("HF_DATASETS_OFFLINE"):
            # network is down but the offline switch is not set: loading would retry for ~23 s per task
            raise InputError(
                f"MTEB task '{meta.name}' needs data set '{repo}' from the Hugging Face hub, but {offline_reason}",
                where="--tasks",
                hint=f"run where the hub is reachable (or set HF_HUB_OFFLINE=1 to use a cached copy), or {_RUN_LOCALLY}")
        try:
            task.load_data()
        except (OSError, ConnectionError, ValueError, FileNotFoundError) as exc:
            why = offline_reason or str(exc).splitlines()[0][:160]
            raise InputError(
                f"MTEB task '{meta.name}' needs data set '{repo}' from the Hugging Face hub, which is not "
                f"available offline ({why})",
                where="--tasks", hint=f"run where the hub is reachable, or {_RUN_LOCALLY}") from None
    return tasks
