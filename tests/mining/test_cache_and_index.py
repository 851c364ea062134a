"""Embedding cache (no re-encoding, resumable, keyed by model/prompt) and FAISS indexes (IVF = flat, HNSW works)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import embedkit.mining.miner as miner
from embedkit.errors import ConfigError
from embedkit.mining import EmbeddingCache, build_index, mine_hard_negatives, model_fingerprint, search
from embedkit.mining.index import default_nlist


class CountingEncode:
    """Wraps the real embedkit.encode and counts calls and texts."""

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0
        self.real = miner.encode

    def __call__(self, model, texts, **kw):
        self.calls += 1
        self.texts += len(texts)
        return self.real(model, texts, **kw)


@pytest.fixture
def counting(monkeypatch) -> CountingEncode:
    c = CountingEncode()
    monkeypatch.setattr(miner, "encode", c)
    return c


def test_second_run_with_other_filters_does_not_encode(tiny_st, debian_pairs, counting, tmp_path: Path) -> None:
    pairs = debian_pairs[:40]
    first = mine_hard_negatives(pairs, tiny_st, cache_dir=tmp_path, num_negatives=3, show_progress_bar=False)
    assert counting.texts == 80 and first.stats.encoded == 80  # 40 documents + 40 queries
    calls = counting.calls
    second = mine_hard_negatives(pairs, tiny_st, cache_dir=tmp_path, num_negatives=5, range_min=3,
                                 max_score_ratio=None, sampling="random", show_progress_bar=False)
    assert counting.calls == calls, "re-mining with other filters must not call the encoder"
    assert second.stats.encoded == 0 and second.stats.from_cache == 80
    assert all(len(p.negatives) == 5 for p in second.pairs)
    # one new document: exactly one text is encoded
    mine_hard_negatives(pairs, tiny_st, cache_dir=tmp_path, corpus=["a brand new document"], num_negatives=3,
                        show_progress_bar=False)
    assert counting.texts == 81
    # the cached vectors are the ones a fresh encode gives
    cached = miner.embed_texts(tiny_st, [p.positives[0] for p in pairs], role="document", cache_dir=tmp_path)
    fresh = miner.embed_texts(tiny_st, [p.positives[0] for p in pairs], role="document")
    np.testing.assert_allclose(cached, fresh, atol=1e-5)


def test_cache_key_follows_prompt_and_weights(tiny_st, counting, tmp_path: Path) -> None:
    import torch

    texts = ["alpha", "beta", "gamma"]
    miner.embed_texts(tiny_st, texts, role="document", cache_dir=tmp_path)
    miner.embed_texts(tiny_st, texts, role="document", cache_dir=tmp_path)
    assert counting.texts == 3
    miner.embed_texts(tiny_st, texts, role="document", prompt="passage: ", cache_dir=tmp_path)
    assert counting.texts == 6  # another prompt is another namespace
    before = model_fingerprint(tiny_st)
    param = next(tiny_st.parameters())
    with torch.no_grad():
        param.view(-1)[0] += 1.0
    try:
        assert model_fingerprint(tiny_st) != before
        miner.embed_texts(tiny_st, texts, role="document", cache_dir=tmp_path)
        assert counting.texts == 9  # changed weights never reuse stale vectors
    finally:
        with torch.no_grad():
            param.view(-1)[0] -= 1.0
    assert model_fingerprint(tiny_st) == before


def test_interrupted_encoding_resumes_from_finished_shards(tmp_path: Path) -> None:
    texts = [f"text number {i}" * (1 + i % 3) for i in range(10)]
    calls: list[int] = []

    def flaky(chunk: list[str]) -> np.ndarray:
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while encoding the third shard
        return np.stack([np.full(4, len(t), dtype=np.float32) for t in chunk])

    cache = EmbeddingCache(tmp_path, {"model": "m"}, shard_size=4)
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_encode(texts, flaky)
    finished = sorted(p.name for p in cache.root.glob("shard-*"))
    assert len(finished) == 4  # two shards x (embeddings + keys), no temp files
    calls.clear()
    out = EmbeddingCache(tmp_path, {"model": "m"}, shard_size=4).get_or_encode(texts, flaky)
    assert calls == [2]  # only the 2 texts of the unfinished shard
    np.testing.assert_array_equal(out[:, 0], [len(t) for t in texts])
    for f in cache.root.glob("*.npy"):
        np.load(f, allow_pickle=False)  # plain arrays, no pickle


def test_ivf_at_full_nprobe_equals_flat_and_hnsw_finds_neighbours() -> None:
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((20, 32)).astype(np.float32)
    x = centers[rng.integers(0, 20, 3000)] + 0.3 * rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[:100] + 0.05 * rng.standard_normal((100, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    s_flat, i_flat = search(build_index(x, "flat"), q, 10)
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10]
    np.testing.assert_array_equal(i_flat, exact)
    s_ivf, i_ivf = search(build_index(x, "ivf", nlist=32, nprobe=32), q, 10)
    np.testing.assert_array_equal(i_ivf, i_flat)
    np.testing.assert_allclose(s_ivf, s_flat, atol=1e-5)
    _, i_low = search(build_index(x, "ivf", nlist=32, nprobe=1), q, 10)
    recall_low = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_low, i_flat)])
    assert recall_low < 1.0  # nprobe matters: one cell misses neighbours
    _, i_hnsw = search(build_index(x, "hnsw", hnsw_m=16), q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_hnsw, i_flat)])
    assert recall >= 0.95
    s, i = search(build_index(x[:5], "flat"), q[:2], 10)  # k larger than the corpus
    assert i.shape == (2, 5)


def test_index_errors() -> None:
    x = np.eye(8, dtype=np.float32)
    with pytest.raises(ConfigError, match="nlist .* is larger than the corpus"):
        build_index(x, "ivf", nlist=20)
    with pytest.raises(ConfigError, match="FAISS sees no GPU"):
        build_index(x, "flat", use_gpu=True)
    assert default_nlist(100_000) == 1264 and default_nlist(50) == 1


def test_mining_with_ivf_and_hnsw_matches_flat(tiny_st, debian_pairs, tmp_path: Path) -> None:
    pairs = debian_pairs[:120]
    kw = dict(cache_dir=tmp_path, num_negatives=4, show_progress_bar=False)
    flat = mine_hard_negatives(pairs, tiny_st, **kw)
    ivf = mine_hard_negatives(pairs, tiny_st, index="ivf", nlist=2, nprobe=2, **kw)
    hnsw = mine_hard_negatives(pairs, tiny_st, index="hnsw", **kw)
    assert [p.negatives for p in ivf.pairs] == [p.negatives for p in flat.pairs]
    same = sum(len(set(a.negatives) & set(b.negatives)) for a, b in zip(hnsw.pairs, flat.pairs))
    assert same / sum(len(p.negatives) for p in flat.pairs) >= 0.95
