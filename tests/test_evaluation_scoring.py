"""score_beir / retrieval_metrics: hand computations, agreement with pytrec_eval, exact search."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from embedkit.data.beir import BeirData
from embedkit.errors import ConfigError
from embedkit.evaluation.scoring import rank_documents, retrieval_metrics, score_beir


def test_metrics_by_hand():
    qrels = {"q1": {"a": 2, "b": 1, "z": 0}, "q2": {"c": 1}}
    run = {"q1": ["x", "b", "a", "z"], "q2": ["y", "w"]}
    m = retrieval_metrics(qrels, run, k_values=(1, 3))
    # q1: gains [0, 1, 2] -> DCG@3 = 1/log2(3) + 2/log2(4); ideal [2, 1] -> 2 + 1/log2(3)
    ndcg3_q1 = (1 / math.log2(3) + 2 / 2) / (2 + 1 / math.log2(3))
    assert m["ndcg@3"] == pytest.approx(ndcg3_q1 / 2)
    assert m["ndcg@1"] == 0.0
    assert m["recall@3"] == pytest.approx((2 / 2 + 0) / 2)
    assert m["mrr@3"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["mrr@1"] == 0.0
    assert m["precision@3"] == pytest.approx((2 / 3) / 2)


def test_query_missing_from_run_scores_zero_and_empty_qrels_skipped():
    m = retrieval_metrics({"q1": {"a": 1}, "q2": {"b": 1}, "q3": {}}, {"q1": ["a"]}, k_values=(10,))
    assert m["ndcg@10"] == pytest.approx(0.5) and m["recall@10"] == pytest.approx(0.5)


def test_bad_k_values():
    with pytest.raises(ConfigError, match="k_values"):
        retrieval_metrics({"q": {"a": 1}}, {"q": ["a"]}, k_values=(0,))


def test_agrees_with_pytrec_eval_on_random_runs():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = random.Random(0)
    docs = [f"d{i}" for i in range(60)]
    qrels, run, run_scores = {}, {}, {}
    for q in range(40):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 6))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        ranked = rng.sample(docs, 30)
        run[qid] = ranked
        run_scores[qid] = {d: float(30 - i) for i, d in enumerate(ranked)}
    ks = (1, 3, 5, 10, 20)
    ours = retrieval_metrics(qrels, run, ks)
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.1,3,5,10,20", "recall.1,3,5,10,20", "P.1,3,5,10,20"})
    per_q = ev.evaluate(run_scores)
    for k in ks:
        for ours_key, trec_key in ((f"ndcg@{k}", f"ndcg_cut_{k}"), (f"recall@{k}", f"recall_{k}"),
                                   (f"precision@{k}", f"P_{k}")):
            ref = np.mean([per_q[q][trec_key] for q in per_q])
            assert ours[ours_key] == pytest.approx(ref, abs=1e-9), ours_key
        # MRR@k = pytrec_eval's reciprocal rank of the run cut at k
        cut = {q: dict(list(s.items())[:k]) for q, s in run_scores.items()}
        rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
        assert ours[f"mrr@{k}"] == pytest.approx(np.mean([rr[q]["recip_rank"] for q in rr]), abs=1e-9)


def test_rank_documents_exact_and_tie_break():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 5)).astype(np.float32)
    d = rng.normal(size=(50, 5)).astype(np.float32)
    ids = [f"doc{i:02d}" for i in range(50)]
    got = rank_documents(q, d, ids, top_k=5, query_block=3)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    want = [[ids[j] for j in np.argsort(-row, kind="stable")[:5]] for row in qn @ dn.T]
    assert got == want
    # identical documents tie: pytrec_eval orders ties by doc id, descending
    tied = rank_documents(np.ones((1, 2)), np.ones((3, 2)), ["a", "c", "b"], top_k=3)
    assert tied == [["c", "b", "a"]]
    with pytest.raises(ConfigError, match="similarity"):
        rank_documents(q, d, ids, 3, similarity="l2")


def test_score_beir_matches_manual_search(tiny_bert):
    from embedkit import encode, load_model

    model = load_model(tiny_bert)
    texts = ["list directory contents", "copy files", "remove files", "make directories", "print working dir",
             "change file mode", "show disk usage", "archive files with tar"]
    corpus = {f"d{i}": {"title": "T" if i % 2 else "", "text": t} for i, t in enumerate(texts)}
    queries = {f"q{i}": f"how do I {t.split()[0]}" for i, t in enumerate(texts)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(texts))}
    data = BeirData(corpus=corpus, queries=queries, qrels=qrels, name="tiny")
    model.train()
    scores = score_beir(model, data, k_values=(1, 3))
    assert model.training  # mode restored
    qe = encode(model, list(queries.values()), role="query")
    de = encode(model, [data.doc_text(d) for d in corpus], role="document")
    sims = (qe / np.linalg.norm(qe, axis=1, keepdims=True)) @ (de / np.linalg.norm(de, axis=1, keepdims=True)).T
    ranks = [int((row > row[i]).sum()) for i, row in enumerate(sims)]  # 0-based rank of the positive
    assert scores["recall@1"] == pytest.approx(np.mean([r < 1 for r in ranks]))
    assert scores["recall@3"] == pytest.approx(np.mean([r < 3 for r in ranks]))
    assert scores["mrr@3"] == pytest.approx(np.mean([1 / (r + 1) if r < 3 else 0 for r in ranks]))
    assert scores["ndcg@3"] == pytest.approx(np.mean([1 / math.log2(r + 2) if r < 3 else 0 for r in ranks]))
