"""Evaluate several checkpoints on mteb tasks in one call: mteb result JSONs + ``REPORT.md`` + chart + summary.

Why not call ``mteb.evaluate`` in a loop? Three traps this module closes:

* mteb names result folders after ``model.model_card_data.model_name`` / revision; fine-tuned checkpoints of one
  base share them, so each run silently overwrites the previous one. Here every checkpoint gets its own model name
  (``embedkit/<label>``) and revision (a hash of where it came from), restored afterwards on objects you passed in.
* a hub task offline spends ~23 s retrying; here all task data is resolved *before* any checkpoint is loaded
  and an unreachable hub is one clear line (:mod:`embedkit.evaluation.tasks`).
* a crash half-way leaves half a result folder; here everything is written to a temporary sibling of the output
  folder and renamed at the end (an existing output folder holding another run is refused unless overwritten).

Output layout::

    OUT/results/embedkit__<label>/<revision>/<Task>.json   mteb's own result files (mteb.ResultCache layout)
    OUT/REPORT.md                                           task x checkpoint table, deltas, retrieval @10 metrics
    OUT/comparison.png                                      bar chart of main scores per task and checkpoint
    OUT/dims.png                                            with ``dims``: main score vs embedding dimension
    OUT/summary.json                                        everything above, machine-readable

**Matryoshka dims.** ``dims=[384, 128, 64]`` scores every checkpoint at each dim: its embeddings truncated to the
first ``d`` dimensions (sentence-transformers' ``truncate_embeddings``) and compared with cosine similarity, i.e.
re-normalised, as ``losses.matryoshka`` trains them. Each (checkpoint, dim) is one row labelled ``<label>@<dim>``
with its own mteb model name and revision, so REPORT.md and summary.json hold every dim of one run, and
``dims.png`` plots quality against dimension. A dim above a checkpoint's dimension is a one-line ``ConfigError``
naming ``dims`` before that checkpoint is scored.

Example:
    >>> from embedkit.evaluation import evaluate, manpages_path
    >>> res = evaluate(["minilm", "runs/ckpt-500"], beir=[manpages_path()], output_dir="eval-out")  # doctest: +SKIP
    >>> res.score("ckpt-500", "manpages") - res.score("minilm", "manpages")                         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import hashlib
import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from embedkit.errors import ConfigError, ModelError, OutputError
from embedkit.evaluation.results import SUMMARY_FORMAT, CheckpointInfo, EvalResults, TaskScore

logger = logging.getLogger(__name__)

__all__ = ["CheckpointInfo", "EvalResults", "TaskScore", "check_dims", "evaluate", "load_checkpoint"]

#: retrieval metrics copied from mteb's result into reports (mteb key -> report name)
RETRIEVAL_METRICS = {"ndcg_at_10": "ndcg@10", "recall_at_10": "recall@10", "mrr_at_10": "mrr@10"}
STS_METRICS = {"cosine_spearman": "cosine_spearman", "cosine_pearson": "cosine_pearson"}

Checkpoint = str | os.PathLike | SentenceTransformer


# ------------------------------------------------------------------------------------------------ checkpoints
def load_checkpoint(path: str | os.PathLike, *, base_model: str | None = None,
                    trust_remote_code: bool = False) -> SentenceTransformer:
    """Load a checkpoint folder or alias with :func:`embedkit.load_model`.

    LoRA checkpoints evaluate as the trained model: a bare adapter folder is applied to its base
    (``base_model``, else the adapter's ``base_model_name_or_path``), a run saved with ``merge_on_save: false``
    (pipeline + ``adapter/``) to its own pipeline, and merged (see :func:`embedkit.models.lora.find_adapter`).
    """
    from embedkit.models import load_model

    return load_model(str(path), base_model=base_model, trust_remote_code=trust_remote_code)


def _label_for(ckpt: Checkpoint, index: int) -> str:
    if isinstance(ckpt, SentenceTransformer):
        name = ckpt.model_card_data.model_name
        return Path(name).name if name else f"model{index + 1}"
    p = Path(ckpt)
    return p.name or str(ckpt)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        lab = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in lab) or "model"
        n = seen.get(lab, 0) + 1
        seen[lab] = n
        out.append(lab if n == 1 else f"{lab}-{n}")
    # a generated "x-2" may collide with a user's literal "x-2": resolve once more
    if len(set(out)) != len(out):
        return [f"{lab}-{i + 1}" for i, lab in enumerate(out)]
    return out


def _source(ckpt: Checkpoint) -> str:
    if isinstance(ckpt, SentenceTransformer):
        return f"<in-memory {type(ckpt).__name__}>"
    p = Path(ckpt)
    return str(p.resolve()) if p.exists() else str(ckpt)


def _revision(source: str, index: int, dim: int | None = None) -> str:
    """A revision string that differs per checkpoint (mteb keys result folders on name + revision)."""
    h = hashlib.sha1(f"{index}:{source}".encode() + (b"" if dim is None else f":dim{dim}".encode()))
    p = Path(source)
    if p.is_dir():
        for f in sorted(p.rglob("*.safetensors"))[:16]:
            st = f.stat()
            h.update(f"{f.relative_to(p)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


# ------------------------------------------------------------------------------------------------------- tasks
def _build_tasks(tasks: Sequence[str] | str | None, beir: Sequence[str | os.PathLike] | str | os.PathLike | None,
                 sts: Sequence[str | os.PathLike] | str | os.PathLike | None, split: str,
                 max_queries: int | None = None, max_corpus: int | None = None) -> list[Any]:
    from embedkit.data.beir import load_beir
    from embedkit.data.samples import SAMPLE_PREFIX, resolve_data_path
    from embedkit.evaluation.tasks import beir_task, hub_tasks, sts_task

    def as_list(x: Any) -> list[Any]:
        if x is None:
            return []
        if isinstance(x, (str, os.PathLike)):
            return [x]
        return list(x)

    names = [n for raw in as_list(tasks) for n in str(raw).split(",") if n.strip()]
    beir_dirs, sts_files = as_list(beir), as_list(sts)
    if not (names or beir_dirs or sts_files):
        raise ConfigError("no tasks to run", where="--tasks/--beir/--sts",
                          hint="give MTEB task names (--tasks), BEIR folders (--beir) or STS files (--sts)")
    out: list[Any] = []
    used: set[str] = set()

    def unique_name(base: str) -> str:
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        return name

    # local data first: it is validated instantly and its errors are the most likely ones
    for raw in beir_dirs:
        folder = resolve_data_path(raw)  # sample:NAME -> the packaged folder, named after the sample
        text = os.fspath(raw)
        name = text[len(SAMPLE_PREFIX):] if text.startswith(SAMPLE_PREFIX) else None
        source: Any = folder
        if max_queries is not None or max_corpus is not None:  # a deterministic subset: relevant documents kept
            source = load_beir(folder, split=split).subset(max_queries, max_corpus)
            name = name or Path(folder).name
        task = beir_task(source, split=split, name=name)
        if task.metadata.name in used:
            task = beir_task(source, split=split, name=unique_name(task.metadata.name))
        else:
            used.add(task.metadata.name)
        out.append(task)
    for file in sts_files:
        task = sts_task(file)
        if task.metadata.name in used:
            task = sts_task(file, name=unique_name(task.metadata.name))
        else:
            used.add(task.metadata.name)
        out.append(task)
    if names:
        for task in hub_tasks(names):
            if task.metadata.name in used:
                raise ConfigError(f"task name '{task.metadata.name}' is used twice", where="--tasks",
                                  hint="rename the local folder/file or drop the duplicate")
            used.add(task.metadata.name)
            out.append(task)
    return out


def _task_info(task: Any) -> dict[str, str]:
    meta = task.metadata
    return {"name": meta.name, "type": meta.type, "main_score": meta.main_score,
            "source": str(meta.dataset.get("path", "")), "revision": str(meta.dataset.get("revision", ""))}


def check_dims(dims: Sequence[int] | None, where: str = "dims") -> list[int] | None:
    """``dims`` as distinct positive ints, largest first (``None`` stays ``None``); one-line ``ConfigError``
    naming ``where`` otherwise.

    Example:
        >>> check_dims([64, 384, 128])
        [384, 128, 64]
    """
    if dims is None:
        return None
    out = list(dims)
    if not out:
        raise ConfigError("no dims given", where=where, hint="give e.g. 384,128,64, or leave the option out")
    for d in out:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ConfigError(f"every dim must be an integer >= 1 (got {d!r})", where=where,
                              hint="give positive integers, e.g. 384,128,64")
    if len(set(out)) != len(out):
        raise ConfigError(f"dims must not repeat (got {','.join(map(str, out))})", where=where,
                          hint="give each dim once")
    return sorted(out, reverse=True)


def _model_dim(model: SentenceTransformer) -> int | None:
    get = getattr(model, "get_embedding_dimension", None) or getattr(model, "get_sentence_embedding_dimension")
    dim = get()
    return int(dim) if dim else None


def _run_key(sources: list[str], tasks: list[dict[str, str]], dims: list[int] | None = None) -> str:
    key: dict[str, Any] = {"checkpoints": sources, "tasks": [(t["name"], t["revision"]) for t in tasks]}
    if dims is not None:
        key["dims"] = dims
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _check_output(out: Path, run_key: str, overwrite: bool) -> None:
    """Refuse an existing non-empty output folder that holds another run (or something else) unless ``overwrite``."""
    if overwrite or not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder", hint="choose another --output")
    if not any(out.iterdir()):
        return
    summary = out / "summary.json"
    try:
        old = json.loads(summary.read_text(encoding="utf-8"))
        same = old.get("format") == SUMMARY_FORMAT and old.get("run_key") == run_key
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        same = False
    if not same:
        raise OutputError(f"output folder {out} already holds a different run (or other files)",
                          hint="choose a new --output, or pass --overwrite to replace it")


# ------------------------------------------------------------------------------------------------------ scores
def _task_score(task: Any, result: Any, split: str, cache: Any, info: CheckpointInfo, out_root: Path) -> TaskScore:
    meta = task.metadata
    split_scores = result.scores.get(split) or next(iter(result.scores.values()), [])
    entry = split_scores[0] if split_scores else {}
    if len(split_scores) > 1:  # multilingual hub task: average the subsets like mteb's main score
        keys = set.intersection(*(set(s) for s in split_scores))
        entry = {k: float(sum(float(s[k]) for s in split_scores) / len(split_scores)) for k in keys
                 if all(isinstance(s[k], (int, float)) for s in split_scores)}
    wanted = RETRIEVAL_METRICS if "main_score" in entry and "ndcg_at_10" in entry else STS_METRICS
    metrics = {name: _float(entry.get(key)) for key, name in wanted.items() if key in entry}
    path = cache.get_task_result_path(meta.name, info.model_name, info.revision)
    return TaskScore(task=meta.name, task_type=meta.type, main_metric=meta.main_score,
                     main_score=_float(entry.get("main_score")), metrics=metrics,
                     result_file=str(path.relative_to(out_root)) if path.exists() else None)


def _float(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


# ---------------------------------------------------------------------------------------------------- evaluate
def evaluate(
    checkpoints: Checkpoint | Sequence[Checkpoint],
    *,
    tasks: Sequence[str] | str | None = None,
    beir: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    sts: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    labels: Sequence[str] | None = None,
    split: str = "test",
    batch_size: int = 32,
    base_model: str | None = None,
    trust_remote_code: bool = False,
    show_progress_bar: bool = True,
    max_queries: int | None = None,
    max_corpus: int | None = None,
    dims: Sequence[int] | None = None,
) -> EvalResults:
    """Evaluate checkpoints on MTEB hub tasks and/or local BEIR folders and STS files, with mteb's scoring.

    Args:
        checkpoints: model folders, aliases (``"minilm"``), LoRA adapter folders, or loaded ``SentenceTransformer``
            objects; the first one is the baseline for deltas in the report.
        tasks: MTEB task names (need the Hugging Face hub, or its cache with ``HF_HUB_OFFLINE=1``).
        beir: local BEIR folders or ``sample:NAME`` (each becomes a retrieval task named after the folder/sample).
        sts: local STS pair files (``.jsonl``/``.tsv``/``.csv`` with sentence1, sentence2, score).
        output_dir: where to write mteb results + ``REPORT.md`` + ``comparison.png`` + ``summary.json``
            (atomically); ``None`` keeps results in memory only.
        overwrite: replace an existing ``output_dir`` that holds another run.
        labels: report names of the checkpoints (default: folder names, made unique).
        split: split of the local BEIR folders (``qrels/<split>.tsv``).
        batch_size: encoding batch size.
        base_model: base model for LoRA adapter folders whose ``base_model_name_or_path`` moved.
        trust_remote_code: allow model folders' own code (off by default).
        show_progress_bar: mteb's encoding progress bars and a per-checkpoint line on stderr.
        max_queries / max_corpus: evaluate the BEIR folders on a deterministic subset (a seeded sample of queries,
            every document judged for them, then seeded distractors up to ``max_corpus``) -- minutes instead of tens
            of minutes on a CPU; ``None`` keeps everything.
        dims: score every checkpoint at each of these embedding dimensions (truncated, re-normalised: see the
            module docstring); one row ``<label>@<dim>`` each, plus ``dims.png``. ``None``: the full dimension.

    Returns:
        :class:`EvalResults` (also written to ``output_dir/summary.json``).

    Raises:
        InputError: malformed local data, unknown task, hub task offline (all before any model is loaded).
        OutputError: ``output_dir`` holds a different run and ``overwrite`` is false.
        ModelError: a checkpoint cannot be loaded.
    """
    import mteb

    from embedkit.utils.io import atomic_dir, check_writable_parent

    ckpts: list[Checkpoint] = [checkpoints] if isinstance(checkpoints, (str, os.PathLike, SentenceTransformer)) \
        else list(checkpoints)
    if not ckpts:
        raise ConfigError("no checkpoints to evaluate", where="checkpoints", hint="pass at least one model")
    if labels is not None and len(labels) != len(ckpts):
        raise ConfigError(f"{len(labels)} labels for {len(ckpts)} checkpoints", where="labels",
                          hint="give one label per checkpoint")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (got {batch_size})", where="batch_size")
    for key, value in (("max_queries", max_queries), ("max_corpus", max_corpus)):
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 (got {value})", where=key, hint="give a positive count, or none")
    dim_list = check_dims(dims)
    out = Path(output_dir) if output_dir is not None else None
    if out is not None:
        check_writable_parent(out)
    from embedkit.models.loading import check_model

    for c in ckpts:  # every check loading makes (configs, adapters, pickles, safetensors headers; no weights), on
        # every checkpoint before the first is evaluated: a bad second path must not wait for minutes of encoding
        if not isinstance(c, SentenceTransformer):
            check_model(str(c), base_model=base_model, trust_remote_code=trust_remote_code)

    task_objs = _build_tasks(tasks, beir, sts, split, max_queries, max_corpus)
    task_infos = [_task_info(t) for t in task_objs]
    sources = [_source(c) for c in ckpts]
    run_key = _run_key(sources, task_infos, dim_list)
    if out is not None:
        _check_output(out, run_key, overwrite)
    label_list = _unique(list(labels) if labels is not None else [_label_for(c, i) for i, c in enumerate(ckpts)])
    # one row per checkpoint, or per (checkpoint, dim) with dims
    rows: list[list[CheckpointInfo]] = []
    for i, (lab, src) in enumerate(zip(label_list, sources)):
        if dim_list is None:
            rows.append([CheckpointInfo(label=lab, source=src, model_name=f"embedkit/{lab}",
                                        revision=_revision(src, i))])
        else:
            rows.append([CheckpointInfo(label=f"{lab}@{d}", source=src, model_name=f"embedkit/{lab}@{d}",
                                        revision=_revision(src, i, d), dim=d, checkpoint=lab) for d in dim_list])
    infos = [info for row in rows for info in row]
    results = EvalResults(checkpoints=infos, tasks=task_infos, scores={}, split=split,
                          output_dir=str(out) if out else None, run_key=run_key, dims=dim_list,
                          created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def run_all(root: Path) -> None:
        cache = mteb.ResultCache(cache_path=root)
        for i, (ckpt, row) in enumerate(zip(ckpts, rows)):
            if show_progress_bar:
                what = row[0].label if dim_list is None else f"{row[0].checkpoint} at dims {dim_list}"
                print(f"[{i + 1}/{len(ckpts)}] {what}: {len(task_objs)} task(s)", file=sys.stderr, flush=True)
            owned = not isinstance(ckpt, SentenceTransformer)
            model = load_checkpoint(ckpt, base_model=base_model, trust_remote_code=trust_remote_code) if owned \
                else ckpt
            if dim_list is not None:
                from embedkit.losses.matryoshka import check_dims as check_model_dims

                check_model_dims(dim_list, _model_dim(model), where="dims")
            for info in row:
                results.scores[info.label] = _run_one(model, info, task_objs, cache, root)
            if owned:
                del model
                gc.collect()

    def _run_one(model: SentenceTransformer, info: CheckpointInfo, task_objs: list[Any], cache: Any,
                 root: Path) -> dict[str, TaskScore]:
        card = model.model_card_data
        saved = (card.model_name, card.base_model_revision)
        card.model_name, card.base_model_revision = info.model_name, info.revision
        truncation = contextlib.nullcontext() if info.dim is None else model.truncate_embeddings(info.dim)
        saved_sim = model.similarity_fn_name if info.dim is not None else None
        if info.dim is not None:  # cosine on the truncated embeddings = dot product after re-normalising
            model.similarity_fn_name = "cosine"
        try:
            with warnings.catch_warnings(), truncation:
                # mteb 2.26 calls sentence-transformers' renamed get_sentence_embedding_dimension: noise only
                warnings.filterwarnings("ignore", category=FutureWarning, module=r"mteb\..*")
                res = mteb.evaluate(model, task_objs, cache=cache, overwrite_strategy="always",
                                    encode_kwargs={"batch_size": batch_size,
                                                   "show_progress_bar": show_progress_bar},
                                    show_progress_bar=show_progress_bar, co2_tracker=False)
        finally:
            card.model_name, card.base_model_revision = saved
            if saved_sim is not None:
                model.similarity_fn_name = saved_sim
        by_name = {r.task_name: r for r in res.task_results}
        scores: dict[str, TaskScore] = {}
        for task in task_objs:
            r = by_name.get(task.metadata.name)
            if r is None:
                raise ModelError(f"mteb returned no result for task '{task.metadata.name}' with {info.label}",
                                 hint="rerun with --debug to see mteb's log")
            scores[task.metadata.name] = _task_score(task, r, split, cache, info, root)
        return scores

    if out is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="embedkit-eval-") as tmp:
            run_all(Path(tmp))
        for per_task in results.scores.values():  # the result files went away with the temporary folder
            for ts in per_task.values():
                ts.result_file = None
        return results
    with atomic_dir(out, overwrite=True) as tmp:
        run_all(tmp)
        from embedkit.evaluation.report import write_report

        write_report(results, tmp)
    return results
