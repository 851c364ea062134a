"""Score a cross-encoder as a reranker: a bi-encoder's top-k on a BEIR split, rescored; nDCG@10 of both.

Why: a distillation teacher is only worth its cost if it ranks better than the student it teaches. This measures
exactly that on held-out data: the bi-encoder retrieves its top ``top_k`` documents per query (exact search, as
:func:`~embedkit.evaluation.scoring.score_beir`), the teacher rescores those candidates, and both rankings are
scored with the same metrics (:func:`~embedkit.evaluation.scoring.retrieval_metrics`, mteb's definitions). The
rerank can only reorder the candidates: documents outside the bi-encoder's top ``top_k`` stay missed. Equal teacher
scores keep the bi-encoder's order.

Example:
    >>> from embedkit import load_model
    >>> from embedkit.evaluation.rerank import rerank_beir
    >>> from embedkit.mining.teacher import Teacher
    >>> res = rerank_beir(load_model("minilm"), Teacher.load("teachers/ce"), "sample:debian-beir")  # doctest: +SKIP
    >>> res.bi_encoder["ndcg@10"], res.rerank["ndcg@10"]                                          # doctest: +SKIP
    (0.81..., 0.85...)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from embedkit.data.beir import BeirData, load_beir
from embedkit.errors import ConfigError

__all__ = ["RerankScores", "rerank_beir", "rerank_run"]

#: ``score_lists(queries, docs) -> scores`` with ``docs[i]`` the candidates of ``queries[i]``
#: (:meth:`embedkit.mining.teacher.Teacher.score_lists`)
ScoreLists = Callable[[Sequence[str], Sequence[Sequence[str]]], Sequence[Sequence[float]]]


@dataclass
class RerankScores:
    """Metrics of the bi-encoder's ranking and of the reranked one, on the same queries.

    ``runs`` holds both rankings (``{"bi_encoder": {qid: [doc ids]}, "rerank": {...}}``) for inspection."""

    bi_encoder: dict[str, float]
    rerank: dict[str, float]
    top_k: int
    num_queries: int
    num_documents: int
    name: str = ""
    runs: dict[str, dict[str, list[str]]] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Everything but the runs, for ``rerank.json``."""
        delta = {k: self.rerank[k] - self.bi_encoder[k] for k in self.rerank if k in self.bi_encoder}
        return {"task": self.name, "top_k": self.top_k, "queries": self.num_queries,
                "documents": self.num_documents, "bi_encoder": self.bi_encoder, "rerank": self.rerank,
                "delta": delta}


def _check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"top_k must be an integer >= 1 (got {top_k!r})", where="--rerank-top-k",
                          hint="rerank e.g. the top 20 candidates")
    return top_k


def rerank_run(
    data: BeirData,
    run: Mapping[str, Sequence[str]],
    score_lists: ScoreLists,
    *,
    top_k: int = 20,
) -> dict[str, list[str]]:
    """Rerank the first ``top_k`` documents of each query's ranked list in ``run`` by ``score_lists``.

    Best score first; equal scores keep ``run``'s order. Queries missing from ``run`` get an empty list.

    Example:
        >>> data = BeirData(corpus={"a": {"title": "", "text": "x"}, "b": {"title": "", "text": "yy"}},
        ...                 queries={"q": "yy"}, qrels={"q": {"b": 1}})
        >>> rerank_run(data, {"q": ["a", "b"]}, lambda qs, ds: [[float(len(d)) for d in row] for row in ds])
        {'q': ['b', 'a']}
    """
    _check_top_k(top_k)
    qids = list(data.queries)
    cands = [list(run.get(q, ()))[:top_k] for q in qids]
    scores = score_lists([data.queries[q] for q in qids], [[data.doc_text(d) for d in c] for c in cands])
    out: dict[str, list[str]] = {}
    for qid, docs, sc in zip(qids, cands, scores):
        order = sorted(range(len(docs)), key=lambda i: (-float(sc[i]), i))
        out[qid] = [docs[i] for i in order]
    return out


def rerank_beir(
    model: Any,
    teacher: Any,
    beir: BeirData | str | os.PathLike,
    *,
    top_k: int = 20,
    k_values: Sequence[int] = (10,),
    batch_size: int = 32,
    split: str = "test",
    show_progress_bar: bool | None = None,
) -> RerankScores:
    """nDCG / Recall / MRR / precision of ``model``'s exact top-``top_k`` and of ``teacher``'s rerank of it.

    Args:
        model: the bi-encoder (a ``SentenceTransformer``, e.g. from :func:`embedkit.load_model`).
        teacher: a :class:`~embedkit.mining.teacher.Teacher` (``Teacher.load(path, "cross")``), or any object with
            its ``score_lists(queries, docs)``.
        beir: a :class:`~embedkit.data.beir.BeirData`, a BEIR folder or ``sample:NAME``.
        top_k: candidates per query the teacher rescores.
        k_values: metric cut-offs.
        batch_size: the bi-encoder's encoding batch size.
        split: qrels split when ``beir`` is a path.
        show_progress_bar: encoding progress (default: for more than 1000 texts).
    """
    from embedkit.evaluation.scoring import retrieval_metrics, retrieve

    _check_top_k(top_k)
    if isinstance(beir, BeirData):
        data = beir
    else:
        from embedkit.data.samples import resolve_data_path

        data = load_beir(resolve_data_path(beir), split=split)
    ks = sorted({int(k) for k in k_values})
    bi_run = retrieve(model, data, max(top_k, ks[-1]), batch_size=batch_size, show_progress_bar=show_progress_bar)
    re_run = rerank_run(data, bi_run, teacher.score_lists, top_k=top_k)
    return RerankScores(bi_encoder=retrieval_metrics(data.qrels, bi_run, ks),
                        rerank=retrieval_metrics(data.qrels, re_run, ks), top_k=top_k, num_queries=len(data.queries),
                        num_documents=len(data.corpus), name=data.name, runs={"bi_encoder": bi_run, "rerank": re_run})
