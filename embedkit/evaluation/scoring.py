"""Fast exact retrieval scoring of a model on a BEIR split, without the mteb machinery.

Why a second scorer next to mteb? A greedy model soup or an eval-during-training callback scores the same small
held-out split dozens of times; mteb's per-run overhead (task objects, datasets, result files, ``pytrec_eval``
over a top-1000 run) dominates on small splits. :func:`score_beir` encodes with :func:`embedkit.encode`
(length-sorted batches), ranks with one matrix product per query block and computes the metrics in numpy.

The metric definitions are mteb's (which are ``pytrec_eval``'s): for each query judged in the qrels,

* ``ndcg@k``: DCG with linear gain (the qrels grade) and ``1 / log2(rank + 1)`` discount over the top ``k``,
  divided by the DCG of the ideal ordering of the judged grades (0 when nothing is relevant);
* ``recall@k``: relevant documents (grade > 0) in the top ``k`` / all relevant documents;
* ``mrr@k``: ``1 / rank`` of the first relevant document in the top ``k`` (0 if none);
* ``precision@k``: relevant documents in the top ``k`` / ``k``;

averaged over queries. Ties in score are broken by document id, descending (as ``pytrec_eval`` does). Documents
are embedded as ``title + " " + text`` (BEIR's and mteb's convention) with the model's ``document`` prompt,
queries with its ``query`` prompt. ``tests/evaluation`` checks agreement with mteb to 1e-4.

Example:
    >>> from embedkit import load_model
    >>> from embedkit.evaluation import score_beir, manpages_path
    >>> scores = score_beir(load_model("minilm"), manpages_path(), k_values=(10,))   # doctest: +SKIP
    >>> sorted(scores)                                                               # doctest: +SKIP
    ['mrr@10', 'ndcg@10', 'precision@10', 'recall@10']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from embedkit.data.beir import BeirData, load_beir
from embedkit.errors import ConfigError

__all__ = ["BeirScoreFn", "beir_score_fn", "check_metric", "rank_documents", "retrieval_metrics", "score_beir",
           "score_beir_at_dims"]

METRICS = ("ndcg", "recall", "mrr", "precision")


def check_metric(metric: str, where: str = "metric") -> int:
    """The cut-off ``k`` of a metric name such as ``ndcg@10``; an unknown name is a :class:`ConfigError`."""
    name, _, k = metric.partition("@")
    if name not in METRICS or not k.isdigit() or int(k) < 1:
        raise ConfigError(f"unknown metric '{metric}'", where=where,
                          hint=f"use one of {', '.join(m + '@10' for m in METRICS)} (any k >= 1)")
    return int(k)


def _check_k(k_values: Sequence[int]) -> list[int]:
    ks = sorted({int(k) for k in k_values})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k_values must be positive integers (got {list(k_values)})", where="k_values",
                          hint="e.g. k_values=(1, 10, 100)")
    return ks


def retrieval_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Sequence[str]],
    k_values: Sequence[int] = (10,),
) -> dict[str, float]:
    """Average ``ndcg@k``, ``recall@k``, ``mrr@k`` and ``precision@k`` of ranked lists against qrels.

    Args:
        qrels: ``query_id -> {doc_id: grade}``; queries with no judgement at all are skipped (as mteb does).
        run: ``query_id -> [doc_id, ...]`` best first (at least ``max(k_values)`` long when possible); a query
            missing from ``run`` scores 0.
        k_values: cut-offs.

    Returns:
        ``{"ndcg@10": ..., "recall@10": ..., "mrr@10": ..., "precision@10": ...}`` for each ``k``.
    """
    ks = _check_k(k_values)
    totals = {f"{m}@{k}": 0.0 for m in METRICS for k in ks}
    n = 0
    for qid, judged in qrels.items():
        if not judged:
            continue
        n += 1
        ranked = list(run.get(qid, ()))[: ks[-1]]
        grades = [max(int(judged.get(d, 0)), 0) for d in ranked]
        ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
        num_rel = len(ideal)
        discounts = 1.0 / np.log2(np.arange(2, ks[-1] + 2))
        gains = np.asarray(grades, dtype=np.float64)
        ideal_g = np.asarray(ideal[: ks[-1]], dtype=np.float64)
        first_hit = next((i for i, g in enumerate(grades) if g > 0), None)
        for k in ks:
            dcg = float((gains[:k] * discounts[: len(gains[:k])]).sum())
            idcg = float((ideal_g[:k] * discounts[: len(ideal_g[:k])]).sum())
            hits = sum(1 for g in grades[:k] if g > 0)
            totals[f"ndcg@{k}"] += dcg / idcg if idcg > 0 else 0.0
            totals[f"recall@{k}"] += hits / num_rel if num_rel else 0.0
            totals[f"precision@{k}"] += hits / k
            totals[f"mrr@{k}"] += 1.0 / (first_hit + 1) if first_hit is not None and first_hit < k else 0.0
    if n == 0:
        return {key: 0.0 for key in totals}
    return {key: value / n for key, value in totals.items()}


def rank_documents(
    query_emb: np.ndarray | torch.Tensor,
    doc_emb: np.ndarray | torch.Tensor,
    doc_ids: Sequence[str],
    top_k: int,
    *,
    similarity: str = "cosine",
    query_block: int = 1024,
) -> list[list[str]]:
    """Top-``top_k`` document ids per query by exact cosine (or dot) similarity, ties broken by id descending.

    Scores are computed one block of queries at a time so memory stays ``query_block x len(doc_ids)``.
    """
    q = torch.as_tensor(np.asarray(query_emb), dtype=torch.float32)
    d = torch.as_tensor(np.asarray(doc_emb), dtype=torch.float32)
    if similarity == "cosine":
        q = torch.nn.functional.normalize(q, dim=-1)
        d = torch.nn.functional.normalize(d, dim=-1)
    elif similarity != "dot":
        raise ConfigError(f"unsupported similarity '{similarity}'", where="similarity", hint="use 'cosine' or 'dot'")
    # take a few extra candidates so that ties at the cut-off can be re-ordered by id like pytrec_eval
    k = min(top_k + 8, d.shape[0])
    out: list[list[str]] = []
    for start in range(0, q.shape[0], query_block):
        scores = q[start : start + query_block] @ d.T
        vals, idx = torch.topk(scores, k, dim=1)
        for row_vals, row_idx in zip(vals.tolist(), idx.tolist()):
            pairs = sorted(zip(row_vals, (doc_ids[i] for i in row_idx)), reverse=True)
            out.append([doc for _, doc in pairs[:top_k]])
    return out


def score_beir(
    model: SentenceTransformer,
    beir: BeirData | str | os.PathLike,
    *,
    k_values: Sequence[int] = (10,),
    batch_size: int = 32,
    split: str = "test",
    show_progress_bar: bool | None = None,
) -> dict[str, float]:
    """Score ``model`` on a BEIR split with exact search: ``{"ndcg@10": ..., "recall@10": ..., ...}``.

    Args:
        model: any ``SentenceTransformer`` (e.g. from :func:`embedkit.load_model`), in train or eval mode
            (it is put back in the mode it was in).
        beir: a :class:`~embedkit.data.beir.BeirData` or a BEIR folder path.
        k_values: cut-offs for every metric.
        batch_size: encoding batch size.
        split: qrels split when ``beir`` is a path.
        show_progress_bar: show encoding progress (default: for more than 1000 texts).

    Returns:
        ``ndcg@k``, ``recall@k``, ``mrr@k`` and ``precision@k`` for each ``k`` (floats in [0, 1]).
    """
    data = beir if isinstance(beir, BeirData) else load_beir(beir, split=split)
    ks = _check_k(k_values)
    run = retrieve(model, data, ks[-1], batch_size=batch_size, show_progress_bar=show_progress_bar)
    return retrieval_metrics(data.qrels, run, ks)


def retrieve(model: SentenceTransformer, data: BeirData, top_k: int, *, batch_size: int = 32,
             show_progress_bar: bool | None = None) -> dict[str, list[str]]:
    """``{query id: the top_k document ids}`` by exact search with ``model`` (its own similarity function).

    The one retrieval step of :func:`score_beir` and of reranking (:mod:`embedkit.evaluation.rerank`).
    """
    qids, doc_ids, q_emb, d_emb = _embed(model, data, batch_size, show_progress_bar)
    ranked = rank_documents(q_emb, d_emb, doc_ids, top_k, similarity=_similarity(model))
    return dict(zip(qids, ranked))


def _similarity(model: SentenceTransformer) -> str:
    """The model's own similarity as :func:`rank_documents` names it: dot product, else cosine."""
    return "dot" if getattr(model, "similarity_fn_name", None) == "dot" else "cosine"


def _embed(model: SentenceTransformer, data: BeirData, batch_size: int, show_progress_bar: bool | None):
    from embedkit.encode import encode

    qids = list(data.queries)
    doc_ids = list(data.corpus)
    q_emb = encode(model, [data.queries[q] for q in qids], role="query", batch_size=batch_size,
                   show_progress_bar=show_progress_bar, output="torch")
    d_emb = encode(model, [data.doc_text(d) for d in doc_ids], role="document", batch_size=batch_size,
                   show_progress_bar=show_progress_bar, output="torch")
    return qids, doc_ids, q_emb, d_emb


def score_beir_at_dims(
    model: SentenceTransformer,
    beir: BeirData | str | os.PathLike,
    dims: Sequence[int],
    *,
    k_values: Sequence[int] = (10,),
    batch_size: int = 32,
    split: str = "test",
    show_progress_bar: bool | None = None,
) -> dict[int, dict[str, float]]:
    """:func:`score_beir` at several embedding sizes from **one** encoding pass: ``{dim: metrics}``.

    Why: a Matryoshka curve (384 / 256 / 128 / 64) scored one dim at a time encodes the corpus once per dim; the
    truncated embeddings are the first ``d`` columns of the full ones, so slicing gives the same ranking for a
    fraction of the cost. Each truncated dim is compared with cosine similarity (re-normalised, as
    ``losses.matryoshka`` trains and sentence-transformers' ``truncate_dim`` + cosine score it); the model's full
    dimension, when listed, keeps the model's own similarity, so its row equals :func:`score_beir`.

    Args:
        dims: embedding sizes, each at most the model's output size (a larger one is a ``ConfigError`` naming
            ``dims`` before anything is encoded).

    Example:
        >>> from embedkit import load_model
        >>> from embedkit.evaluation import manpages_path, score_beir_at_dims
        >>> curve = score_beir_at_dims(load_model("minilm"), manpages_path(), [384, 128, 64])   # doctest: +SKIP
        >>> sorted(curve)                                                                      # doctest: +SKIP
        [64, 128, 384]
    """
    from embedkit.losses.matryoshka import check_dims

    wanted = [int(d) for d in dims]
    if not wanted or min(wanted) < 1:
        raise ConfigError(f"dims must be positive integers (got {list(dims)})", where="dims",
                          hint="give e.g. 384,128,64")
    check_dims(wanted, model.get_embedding_dimension(), where="dims")  # truncate_dim counted, as encode gives
    data = beir if isinstance(beir, BeirData) else load_beir(beir, split=split)
    ks = _check_k(k_values)
    qids, doc_ids, q_emb, d_emb = _embed(model, data, batch_size, show_progress_bar)
    out: dict[int, dict[str, float]] = {}
    for d in dict.fromkeys(wanted):
        sim = _similarity(model) if d == q_emb.shape[1] else "cosine"
        ranked = rank_documents(q_emb[:, :d], d_emb[:, :d], doc_ids, ks[-1], similarity=sim)
        out[d] = retrieval_metrics(data.qrels, dict(zip(qids, ranked)), ks)
    return out


@dataclass(frozen=True)
class BeirScoreFn:
    """``score_fn(model_dir) -> float``: load a model folder and score ``metric`` on a BEIR split.

    What a greedy soup needs (:func:`embedkit.soup.soup` takes any ``score_fn``); ``metric`` names the score in
    the soup's record and card. Build it with :func:`beir_score_fn`.
    """

    data: BeirData
    metric: str
    batch_size: int = 32

    def __call__(self, model_dir: str | os.PathLike) -> float:
        from embedkit.models import load_model

        scores = score_beir(load_model(str(model_dir)), self.data, k_values=(check_metric(self.metric),),
                            batch_size=self.batch_size)
        return float(scores[self.metric])


def beir_score_fn(eval_dir: str | os.PathLike | BeirData, metric: str = "ndcg@10", *,
                  batch_size: int = 32) -> BeirScoreFn:
    """A held-out scorer for greedy soups: load a model folder, score it on a BEIR split (exact search).

    The split is read (and validated) and the metric checked once, here, so a broken eval folder or a typo in the
    metric fails before any averaging.

    Example:
        >>> from embedkit.evaluation import beir_score_fn, manpages_path
        >>> from embedkit.soup import soup
        >>> soup(["run1", "run2"], method="greedy", score_fn=beir_score_fn(manpages_path()),
        ...      output="soup")                                                          # doctest: +SKIP
    """
    check_metric(metric)
    data = eval_dir if isinstance(eval_dir, BeirData) else load_beir(Path(eval_dir))
    return BeirScoreFn(data, metric, batch_size)
