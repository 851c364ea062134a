"""Rerank evaluation: a cross-encoder rescoring a bi-encoder's top-k, scored against hand computations, and the
``embedkit eval --rerank`` report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from embedkit.data.beir import BeirData, load_beir
from embedkit.evaluation.rerank import rerank_beir, rerank_run
from embedkit.evaluation.scoring import retrieval_metrics

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny() -> BeirData:
    corpus = {d: {"title": "", "text": f"text of {d}"} for d in ("d1", "d2", "d3", "d4")}
    return BeirData(corpus=corpus, queries={"q1": "first", "q2": "second"},
                    qrels={"q1": {"d2": 1}, "q2": {"d3": 2, "d4": 1}}, name="tiny")


#: the reranker's scores, by (query text, document text)
SCORES = {("first", "text of d1"): 0.1, ("first", "text of d2"): 0.9, ("first", "text of d3"): 0.5,
          ("second", "text of d1"): 0.2, ("second", "text of d4"): 0.2, ("second", "text of d3"): 0.7}


def _score_lists(queries, docs):
    return [[SCORES[(q, d)] for d in row] for q, row in zip(queries, docs)]


def test_rerank_run_and_ndcg_by_hand() -> None:
    data = _tiny()
    run = {"q1": ["d1", "d2", "d3", "d4"], "q2": ["d1", "d4", "d3", "d2"]}
    reranked = rerank_run(data, run, _score_lists, top_k=3)
    # q1: 0.9 > 0.5 > 0.1; q2: 0.7, then the tie d1 = d4 keeps the bi-encoder's order; the 4th candidate is dropped
    assert reranked == {"q1": ["d2", "d3", "d1"], "q2": ["d3", "d1", "d4"]}
    bi = retrieval_metrics(data.qrels, run, (10,))["ndcg@10"]
    re = retrieval_metrics(data.qrels, reranked, (10,))["ndcg@10"]
    # by hand: gains / log2(rank + 1); q2's ideal order is d3 (2), d4 (1)
    ideal_q2 = 2 / math.log2(2) + 1 / math.log2(3)
    bi_q1 = 1 / math.log2(3)                                  # d2 at rank 2
    bi_q2 = (1 / math.log2(3) + 2 / math.log2(4)) / ideal_q2  # d4 at rank 2, d3 at rank 3
    re_q1 = 1.0                                               # d2 at rank 1
    re_q2 = (2 / math.log2(2) + 1 / math.log2(4)) / ideal_q2  # d3 at rank 1, d4 at rank 3
    assert bi == pytest.approx((bi_q1 + bi_q2) / 2, abs=1e-12)
    assert re == pytest.approx((re_q1 + re_q2) / 2, abs=1e-12)
    assert re == pytest.approx(0.9751182, abs=1e-6)


def test_rerank_top_k_must_be_positive() -> None:
    from embedkit.errors import ConfigError

    with pytest.raises(ConfigError, match="--rerank-top-k"):
        rerank_run(_tiny(), {}, _score_lists, top_k=0)


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory, tiny_bert: str) -> str:
    """A CrossEncoder folder on the tiny BERT (seeded random head), as CrossEncoder.save writes it."""
    import transformers
    from sentence_transformers import CrossEncoder

    transformers.set_seed(3)
    out = tmp_path_factory.mktemp("ce") / "ce"
    CrossEncoder(tiny_bert, num_labels=1, max_length=64, local_files_only=True).save(str(out))
    return str(out)


def _by_hand(model, ce, data: BeirData, top_k: int) -> tuple[float, float]:
    """nDCG@10 of exact cosine retrieval and of the cross-encoder's rerank of its top ``top_k``, written out."""
    qids, dids = list(data.queries), list(data.corpus)
    q = model.encode([data.queries[i] for i in qids], prompt_name=None, convert_to_numpy=True)
    d = model.encode([data.doc_text(i) for i in dids], convert_to_numpy=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = q @ d.T

    def ndcg(qid: str, ranked: list[str]) -> float:
        judged = data.qrels[qid]
        dcg = sum(judged.get(doc, 0) / math.log2(r + 2) for r, doc in enumerate(ranked[:10]))
        ideal = sorted(judged.values(), reverse=True)[:10]
        return dcg / sum(g / math.log2(r + 2) for r, g in enumerate(ideal))

    bi, re = [], []
    for i, qid in enumerate(qids):
        ranked = [dids[j] for j in sorted(range(len(dids)), key=lambda j: (-sims[i, j], dids[j]))]
        bi.append(ndcg(qid, ranked))
        cands = ranked[:top_k]
        scores = ce.predict([(data.queries[qid], data.doc_text(c)) for c in cands], convert_to_numpy=True)
        re.append(ndcg(qid, [cands[j] for j in sorted(range(len(cands)), key=lambda j: (-scores[j], j))]))
    return float(np.mean(bi)), float(np.mean(re))


def test_rerank_beir_equals_a_hand_computation(small_beir: Path, tiny_bert: str, cross_encoder_dir: str) -> None:
    from embedkit import load_model
    from embedkit.mining.teacher import Teacher

    model = load_model(tiny_bert)
    teacher = Teacher.load(cross_encoder_dir, "cross")
    data = load_beir(small_beir)
    res = rerank_beir(model, teacher, data, top_k=5)
    bi, re = _by_hand(model, teacher.model, data, 5)
    assert res.bi_encoder["ndcg@10"] == pytest.approx(bi, abs=1e-5)
    assert res.rerank["ndcg@10"] == pytest.approx(re, abs=1e-5)
    assert res.num_queries == 40 and res.top_k == 5
    assert all(len(v) == 5 for v in res.runs["rerank"].values())


def test_eval_rerank_writes_rerank_json(small_beir: Path, tiny_bert: str, cross_encoder_dir: str,
                                        tmp_path: Path, capsys) -> None:
    from embedkit import load_model
    from embedkit.cli import main
    from embedkit.mining.teacher import Teacher

    out = tmp_path / "eval-out"
    code = main(["eval", tiny_bert, "--beir", str(small_beir), "--rerank", cross_encoder_dir, "--rerank-top-k", "5",
                 "--no-progress", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    rows = json.loads((out / "rerank.json").read_text())
    assert len(rows) == 1 and rows[0]["task"] == "mp_small" and rows[0]["top_k"] == 5
    want = rerank_beir(load_model(tiny_bert), Teacher.load(cross_encoder_dir, "cross"), small_beir, top_k=5)
    assert rows[0]["bi_encoder"]["ndcg@10"] == pytest.approx(want.bi_encoder["ndcg@10"], abs=1e-6)
    assert rows[0]["rerank"]["ndcg@10"] == pytest.approx(want.rerank["ndcg@10"], abs=1e-6)
    assert "rerank" in captured.out and "mp_small: nDCG@10 bi-encoder" in captured.out
    # the bi-encoder figure is the one mteb reports for the same checkpoint (to its usual 1e-4)
    summary = json.loads((out / "summary.json").read_text())
    label = rows[0]["bi_encoder_checkpoint"]
    mteb_ndcg = summary["scores"][label]["mp_small"]["main_score"]
    assert rows[0]["bi_encoder"]["ndcg@10"] == pytest.approx(mteb_ndcg, abs=1e-4)
    assert (out / "REPORT.md").exists()
