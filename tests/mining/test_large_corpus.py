"""Large corpora with bounded memory: the corpus streamed in blocks from the embedding cache (exact for flat) and
IVF-PQ (compressed codes, exact re-scoring), issue #32."""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np
import pytest

from embedkit.errors import ConfigError
from embedkit.mining import EmbeddingCache, mine_hard_negatives
from embedkit.mining.config import make_config
from embedkit.mining.index import as_rows, build_ivfpq, search_blocked, search_ivfpq
from embedkit.mining.miner import min_positive_scores, retrieve


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return _unit(centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim)))


def _exact(docs: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    return index.search(queries, k)


def _cached(tmp_path: Path, vectors: np.ndarray, shard_size: int) -> tuple[EmbeddingCache, list[str]]:
    """A cache holding ``vectors``; texts of varying length, so the longest-first shards are out of corpus order."""
    texts = [f"doc {i} " + "x" * (i * 7919 % 13) for i in range(len(vectors))]
    row = {t: i for i, t in enumerate(texts)}
    cache = EmbeddingCache(tmp_path, {"model": "synthetic"}, shard_size=shard_size)
    cache.get_or_encode(texts, lambda chunk: vectors[[row[t] for t in chunk]])
    return cache, texts


class CountingRows:
    """A row source that records the largest number of rows handed out at once."""

    def __init__(self, data: np.ndarray) -> None:
        self.inner = as_rows(data)
        self.most = 0

    @property
    def shape(self) -> tuple[int, int]:
        return self.inner.shape

    def rows(self, ids):
        self.most = max(self.most, len(ids))
        return self.inner.rows(ids)

    def blocks(self, block_size: int):
        for start, block in self.inner.blocks(block_size):
            self.most = max(self.most, len(block))
            yield start, block


def test_blocked_flat_search_equals_one_index_flat_ip(tmp_path: Path) -> None:
    docs = _unit(np.random.default_rng(0).standard_normal((5000, 32)))
    queries = _unit(np.random.default_rng(1).standard_normal((300, 32)))
    want_s, want_i = _exact(docs, queries, 20)
    cache, texts = _cached(tmp_path, docs, shard_size=512)
    view = cache.view(texts)
    got_s, got_i = search_blocked(view, queries, 20, block_size=700, batch_size=64)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, want_s, rtol=0, atol=1e-6)


def test_blocked_search_never_holds_more_than_one_block() -> None:
    docs = _unit(np.random.default_rng(2).standard_normal((4000, 16)))
    src = CountingRows(docs)
    search_blocked(src, docs[:50], 10, block_size=512)
    assert src.most == 512


def test_view_is_the_cached_matrix_in_corpus_order(tmp_path: Path) -> None:
    vectors = np.random.default_rng(3).standard_normal((1000, 8)).astype(np.float32)
    cache, texts = _cached(tmp_path, vectors, shard_size=128)
    assert len(cache._shards()) == 8
    np.testing.assert_array_equal(cache.view(texts).to_array(), vectors)
    np.testing.assert_array_equal(cache.get_or_encode(texts, lambda t: 1 / 0), vectors)  # all from disk
    picked = [999, 0, 500, 500]
    np.testing.assert_allclose(cache.view(texts, normalize=True).rows(picked), _unit(vectors[picked]), atol=1e-7)
    with pytest.raises(KeyError):
        cache.view(["never encoded"])


def test_ivfpq_recall_at_10_against_flat_and_exact_scores(tmp_path: Path) -> None:
    docs = _clustered(20000, 64, clusters=200, seed=4)
    rng = np.random.default_rng(5)
    queries = _unit(docs[rng.choice(len(docs), 200, replace=False)] + 0.2 * rng.standard_normal((200, 64)))
    _, want = _exact(docs, queries, 10)
    cache, texts = _cached(tmp_path, docs, shard_size=4096)
    view = cache.view(texts)
    src = CountingRows(docs)
    index = build_ivfpq(src, nlist=128, nprobe=16, pq_m=16, block_size=4096, seed=0)
    assert index.code_size == 16 and index.ntotal == len(docs) 
    assert src.most == 64 * 2 ** 8  # trained on a seeded sample (64 points per PQ centroid), then filled by blocks
    scores, ids = search_ivfpq(index, view, queries, 10, refine=4)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), want.tolist())])
    assert recall >= 0.9, recall
    exact = np.einsum("qd,qkd->qk", queries, docs[ids])  # the returned scores are exact, not PQ estimates
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    plain = faiss.IndexIVFPQ(faiss.IndexFlatIP(64), 64, 128, 16, 8, faiss.METRIC_INNER_PRODUCT)
    plain.train(docs)
    plain.add(docs)
    plain.nprobe = 16
    _, pq_ids = plain.search(queries, 10)  # without re-scoring, PQ alone recalls less
    pq_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(pq_ids.tolist(), want.tolist())])
    assert recall > pq_recall


def test_retrieve_streamed_flat_equals_in_memory(tmp_path: Path) -> None:
    docs = _unit(np.random.default_rng(6).standard_normal((3000, 24)))
    queries = docs[::37]
    cache, texts = _cached(tmp_path, docs, shard_size=256)
    view = cache.view(texts, normalize=True)
    a = retrieve(make_config(), docs, queries, 15)
    b = retrieve(make_config(block_size=1000), view, queries, 15)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    positives = [{int(i)} for i in range(0, 3000, 37)]
    np.testing.assert_allclose(min_positive_scores(view, queries, positives, max_rows=7),
                               min_positive_scores(docs, queries, positives), atol=1e-6)


def test_mine_streamed_gives_the_same_negatives(tiny_st, debian_pairs, tmp_path: Path) -> None:
    pairs = debian_pairs[:60]
    kw = dict(cache_dir=tmp_path, num_negatives=3, show_progress_bar=False)
    base = mine_hard_negatives(pairs, tiny_st, **kw)
    streamed = mine_hard_negatives(pairs, tiny_st, block_size=16, **kw)
    assert streamed.stats.encoded == 0  # the second run reads the cache
    assert [p.negatives for p in streamed.pairs] == [p.negatives for p in base.pairs]
    pq = mine_hard_negatives(pairs, tiny_st, index="ivfpq", pq_bits=4, nlist=2, nprobe=2, pq_refine=50, **kw)
    assert [p.negatives for p in pq.pairs] == [p.negatives for p in base.pairs]  # every candidate re-scored


@pytest.mark.parametrize("settings, where, says", [
    (dict(block_size=4096, index="ivf"), "mining", "index=ivfpq"),
    (dict(block_size=4096, index="hnsw"), "mining", "holds every vector in memory"),
    (dict(pq_bits=16), "mining.pq_bits", "<= 12"),
    (dict(block_size=0), "mining.block_size", ">= 1"),
])
def test_bad_large_corpus_settings(settings, where, says) -> None:
    with pytest.raises(ConfigError) as err:
        make_config(**settings)
    assert err.value.where == where and says in str(err.value)


def test_ivfpq_refuses_bad_sizes() -> None:
    docs = _unit(np.random.default_rng(7).standard_normal((300, 24)))
    with pytest.raises(ConfigError) as err:
        build_ivfpq(docs, pq_m=7)
    assert err.value.where == "mining.pq_m" and "divisor of 24" in err.value.hint
    with pytest.raises(ConfigError) as err:
        build_ivfpq(docs[:100], pq_bits=8)
    assert err.value.where == "mining.pq_bits"


def test_streaming_needs_a_cache_folder(tiny_st, debian_pairs) -> None:
    with pytest.raises(ConfigError) as err:
        mine_hard_negatives(debian_pairs[:5], tiny_st, block_size=1024, show_progress_bar=False)
    assert err.value.where == "mining.block_size"


def test_bench_mining_1m_runs_at_a_tiny_size(tmp_path: Path) -> None:
    import subprocess
    import sys

    bench = Path(__file__).resolve().parents[2] / "eval" / "bench_mining_1m.py"
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(bench), "--size", "3000", "--dim", "32", "--queries", "40",
                           "--block-size", "1024", "--arms", "memory-flat", "stream-flat", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    arms = {a["arm"]: a for a in result["arms"]}
    assert arms["stream-flat"]["recall_at_k"] == 1.0  # exact: the same top-k as the in-memory IndexFlatIP
    assert all(a["peak_rss_mb"] > 0 and a["seconds"] > 0 for a in arms.values())
    assert "stream-flat_memory_ratio" in result and "x less memory" in proc.stdout
