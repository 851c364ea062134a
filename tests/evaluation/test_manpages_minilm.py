"""Real model on real data: the packaged all-MiniLM-L6-v2 on the committed man-pages sample.

mteb's nDCG@10 (through embedkit's local BEIR task) must equal an exact computation written here from scratch --
numpy cosine and a hand-written nDCG over the very embeddings mteb asked the model for (recorded by a spy on
``model.encode``, which also proves every query and document reached mteb) -- and so must embedkit's fast scorer,
which encodes on its own (length-sorted batches through ``embedkit.encode``).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from embedkit import load_model

    return load_model(minilm_path)


@pytest.fixture(scope="module")
def data():
    from embedkit.data.beir import load_beir
    from embedkit.evaluation import manpages_path

    return load_beir(manpages_path())


@pytest.fixture(scope="module")
def mteb_run(tmp_path_factory, minilm):
    """Run mteb through embedkit, recording the embeddings mteb asked the model for (text -> vector)."""
    from embedkit.evaluation import evaluate, manpages_path

    recorded: dict[str, np.ndarray] = {}
    original = minilm.encode

    def spy(*args, **kwargs):  # mteb calls encode_query/encode_document -> self.encode(inputs=...)
        out = original(*args, **kwargs)
        texts = kwargs["inputs"] if "inputs" in kwargs else args[0]
        for text, vec in zip(texts, np.asarray(out)):
            recorded[text] = vec
        return out

    minilm.encode = spy
    try:
        out = tmp_path_factory.mktemp("mp") / "out"
        res = evaluate([minilm], beir=[manpages_path()], output_dir=out, labels=["minilm"],
                       show_progress_bar=False)
    finally:
        del minilm.encode
    return res, out, recorded


def _independent_scores(embeddings, data, k=10):
    """Exact search + nDCG@k / Recall@k / MRR@k over given embeddings, written without embedkit's or mteb's code."""
    qids = sorted(data.qrels)
    dids = sorted(data.corpus)
    docs = [(data.corpus[d]["title"] + " " + data.corpus[d]["text"]).strip() for d in dids]
    q = np.stack([embeddings[data.queries[x]] for x in qids])  # KeyError = mteb never embedded it
    d = np.stack([embeddings[t] for t in docs])
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sims = q @ d.T
    ndcg, recall, mrr = [], [], []
    for i, qid in enumerate(qids):
        rel = data.qrels[qid]
        top = np.argsort(-sims[i], kind="stable")[:k]
        gains = [rel.get(dids[j], 0) for j in top]
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
        ndcg.append(dcg / idcg if idcg else 0.0)
        n_rel = sum(1 for g in rel.values() if g > 0)
        recall.append(sum(1 for g in gains if g > 0) / n_rel if n_rel else 0.0)
        first = next((r for r, g in enumerate(gains) if g > 0), None)
        mrr.append(0.0 if first is None else 1.0 / (first + 1))
    return {"ndcg@10": float(np.mean(ndcg)), "recall@10": float(np.mean(recall)), "mrr@10": float(np.mean(mrr))}


def test_mteb_ndcg_equals_independent_computation_and_fast_scorer(mteb_run, minilm, data):
    from embedkit.evaluation import score_beir

    res, out, recorded = mteb_run
    assert len(recorded) == len(data.queries) + len(data.corpus)
    mteb_scores = res.scores["minilm"]["manpages"]
    raw = json.loads((out / mteb_scores.result_file).read_text())["scores"]["test"][0]
    assert raw["ndcg_at_10"] == pytest.approx(mteb_scores.main_score)

    mine = _independent_scores(recorded, data)
    for key in ("ndcg@10", "recall@10", "mrr@10"):
        assert mteb_scores.metrics[key] == pytest.approx(mine[key], abs=1e-4), key
    fast = score_beir(minilm, data, k_values=(10,))
    for key in ("ndcg@10", "recall@10", "mrr@10"):
        assert fast[key] == pytest.approx(mine[key], abs=1e-4), key
    # a real retriever on real data: far above chance (1/1006), below perfect
    assert 0.5 < mine["ndcg@10"] < 0.95
