"""FAISS nearest-neighbour search for mining: exact flat by default, IVF or HNSW for large corpora, GPU if present.

Vectors are L2-normalised by the miner, so inner product = cosine similarity. ``flat`` is exact and the right
choice up to a few hundred thousand documents; ``ivf`` (inverted lists, ``nprobe`` of ``nlist`` cells visited) and
``hnsw`` (graph) trade a little recall for >10x faster search on millions (``eval/bench_mining.py`` measures it).
On a machine with FAISS-GPU, flat and IVF indexes move to all GPUs (HNSW has no GPU version in FAISS).

Large corpora (bounded memory): these indexes hold every vector in RAM, next to the gathered matrix. For millions
of documents the miner can instead read the corpus block by block from the embedding cache
(:class:`embedkit.mining.cache.EmbeddingView`): :func:`search_blocked` is the exact flat search done one block at a
time (same top-k as one ``IndexFlatIP``), and :func:`build_ivfpq` / :func:`search_ivfpq` keep only product-quantised
codes (``pq_m`` bytes per document) and re-score the top ``k x refine`` candidates exactly from the cache.

Example:
    >>> import numpy as np
    >>> from embedkit.mining.index import build_index, search
    >>> docs = np.eye(4, dtype=np.float32)
    >>> scores, ids = search(build_index(docs), docs[:1], k=2)
    >>> ids[0].tolist()[0], float(scores[0, 0])
    (0, 1.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal, Protocol

import faiss
import numpy as np
from tqdm.auto import tqdm

from embedkit.errors import ConfigError

__all__ = ["RowSource", "build_index", "build_ivfpq", "default_nlist", "default_pq_m", "gpu_count", "search",
           "search_blocked", "search_ivfpq"]

logger = logging.getLogger(__name__)


def gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu)."""
    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # a broken CUDA install must not break CPU mining
        return 0


def default_nlist(n: int) -> int:
    """``4 * sqrt(n)`` cells, but at least 39 training points per cell (FAISS's minimum)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_index(
    emb: np.ndarray,
    kind: Literal["flat", "ivf", "hnsw"] = "flat",
    *,
    nlist: int | None = None,
    nprobe: int | None = None,
    hnsw_m: int = 32,
    ef_search: int | None = None,
    use_gpu: bool | Literal["auto"] = "auto",
    seed: int = 0,
) -> Any:
    """Build an inner-product index over ``emb`` (``(n, dim)`` float32).

    Args:
        kind: ``flat`` (exact), ``ivf`` (IndexIVFFlat) or ``hnsw`` (IndexHNSWFlat).
        nlist / nprobe: IVF cells (default :func:`default_nlist`) and cells visited per query (default nlist/8).
        hnsw_m / ef_search: HNSW graph degree and search beam (``ef_search`` default is set at search time).
        use_gpu: ``"auto"`` = when FAISS sees a GPU; ``True`` requires one.
        seed: seed of the IVF training sample.
    """
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    n, dim = emb.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        nlist = nlist or default_nlist(n)
        if nlist > n:
            raise ConfigError(f"nlist ({nlist}) is larger than the corpus ({n} documents)", where="mining.nlist",
                              hint="use fewer cells (about 4 x sqrt(corpus size)) or index='flat'")
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        max_train = 64 * nlist  # 64 points per cell train k-means well; FAISS needs >= 39
        train = emb
        if n > max_train:
            rng = np.random.default_rng(seed)
            train = emb[np.sort(rng.choice(n, max_train, replace=False))]
        index.train(train)
        index.nprobe = min(nlist, nprobe or max(1, nlist // 8))
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = max(40, 2 * hnsw_m)
        if ef_search:
            index.hnsw.efSearch = ef_search
    else:
        raise ConfigError(f"unknown index '{kind}'", where="mining.index", hint="use flat, ivf or hnsw")

    gpus = gpu_count()
    if use_gpu is True and gpus == 0:
        raise ConfigError("use_gpu=True but FAISS sees no GPU", where="mining.use_gpu",
                          hint="install faiss-gpu on a GPU machine, or use use_gpu='auto'")
    if use_gpu and gpus > 0 and kind != "hnsw":
        co = faiss.GpuMultipleClonerOptions()
        co.shard = True
        index = faiss.index_cpu_to_all_gpus(index, co=co)
        logger.info("FAISS index on %d GPU(s)", gpus)
    index.add(emb)
    return index


def search(index: Any, queries: np.ndarray, k: int, *, batch_size: int = 4096, ef_search: int | None = None,
           show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, ids)`` for each query row, best first; missing hits have id ``-1`` and score ``-inf``."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    if hasattr(index, "hnsw") and not ef_search and index.hnsw.efSearch < 2 * k:
        index.hnsw.efSearch = max(128, 2 * k)
    elif hasattr(index, "hnsw") and ef_search:
        index.hnsw.efSearch = ef_search
    if show_progress_bar is None:
        show_progress_bar = len(queries) > 10 * batch_size
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for start in tqdm(range(0, len(queries), batch_size), desc="search", unit="batch",
                      disable=not show_progress_bar):
        s, i = index.search(queries[start:start + batch_size], k)
        scores[start:start + batch_size] = s
        ids[start:start + batch_size] = i
    scores[ids < 0] = -np.inf
    return scores, ids


# ---------------------------------------------------------------------------------------------------------------
# bounded memory: the corpus is read in blocks (from the embedding cache's shards, or an array)

class RowSource(Protocol):
    """What the streamed search needs from a corpus: its shape, rows by id and consecutive blocks.
    :class:`embedkit.mining.cache.EmbeddingView` is one; a plain array is wrapped by :func:`as_rows`."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray: ...

    def blocks(self, block_size: int) -> Iterator[tuple[int, np.ndarray]]: ...


class _ArrayRows:
    """An in-memory ``(n, dim)`` array seen as a :class:`RowSource`."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = np.ascontiguousarray(data, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        return self.data[np.asarray(ids, dtype=np.int64)]

    def blocks(self, block_size: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, len(self.data), block_size):
            yield start, self.data[start:start + block_size]


def as_rows(docs: np.ndarray | RowSource) -> RowSource:
    """``docs`` as a :class:`RowSource` (arrays are wrapped, views pass through)."""
    return _ArrayRows(docs) if isinstance(docs, np.ndarray) else docs


def search_blocked(docs: np.ndarray | RowSource, queries: np.ndarray, k: int, *, block_size: int = 65536,
                   batch_size: int = 4096, show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` over ``docs`` read ``block_size`` rows at a time.

    Each block is searched exactly (``faiss.knn``, the same BLAS kernel as ``IndexFlatIP``) for every query batch
    and merged into one running top-``k`` heap, so the result equals one ``IndexFlatIP`` over the whole corpus while
    only one block (``block_size x dim x 4`` bytes) and the ``(n_queries, k)`` heap are in memory.

    Example:
        >>> import numpy as np
        >>> docs = np.eye(4, dtype=np.float32)
        >>> scores, ids = search_blocked(docs, docs[2:3], k=1, block_size=2)
        >>> ids.tolist(), scores.tolist()
        ([[2]], [[1.0]])
    """
    src = as_rows(docs)
    n = src.shape[0]
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, n))
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    if show_progress_bar is None:
        show_progress_bar = n > 10 * block_size
    for start, block in tqdm(src.blocks(block_size), total=-(-n // block_size), desc="search", unit="block",
                             disable=not show_progress_bar):
        block = np.ascontiguousarray(block, dtype=np.float32)
        kb = min(k, len(block))
        d_all = np.empty((len(queries), kb), dtype=np.float32)
        i_all = np.empty((len(queries), kb), dtype=np.int64)
        for q0 in range(0, len(queries), batch_size):
            d, i = faiss.knn(queries[q0:q0 + batch_size], block, kb, metric=faiss.METRIC_INNER_PRODUCT)
            d_all[q0:q0 + batch_size], i_all[q0:q0 + batch_size] = d, i + start
        heap.add_result(d_all, i_all)
        del block, d_all, i_all
    heap.finalize()
    scores, ids = heap.D, heap.I
    scores[ids < 0] = -np.inf
    return scores, ids


def default_pq_m(dim: int) -> int:
    """Sub-quantizers of IVF-PQ: ``dim / 8`` (48 bytes per 384-d vector), else the largest divisor below it."""
    for m in range(max(1, dim // 8), 0, -1):
        if dim % m == 0:
            return m
    return 1


def build_ivfpq(docs: np.ndarray | RowSource, *, nlist: int | None = None, nprobe: int | None = None,
                pq_m: int | None = None, pq_bits: int = 8, block_size: int = 65536, seed: int = 0,
                max_train: int = 131072) -> Any:
    """An IVF-PQ index (``faiss.IndexIVFPQ``, inner product) trained on a seeded sample and filled block by block.

    Memory: the training sample (at most ``max_train`` rows, 200 MB at 384-d) while training, then ``pq_m + 8``
    bytes per document (codes and ids) and one block. CPU only (the codes are small; the exact re-scoring of
    :func:`search_ivfpq` reads the cache).

    Raises:
        ConfigError: ``pq_m`` does not divide the dimension, the corpus is smaller than ``2 ** pq_bits`` or
            ``nlist``.
    """
    src = as_rows(docs)
    n, dim = src.shape
    m = pq_m or default_pq_m(dim)
    if dim % m:
        raise ConfigError(f"pq_m ({m}) does not divide the embedding dimension ({dim})", where="mining.pq_m",
                          hint=f"use a divisor of {dim}, e.g. {default_pq_m(dim)}")
    if n < 2 ** pq_bits:
        raise ConfigError(f"IVF-PQ with pq_bits={pq_bits} needs at least {2 ** pq_bits} documents (got {n})",
                          where="mining.pq_bits", hint="use index='flat' for a corpus this small, or lower pq_bits")
    nlist = nlist or default_nlist(n)
    if nlist > n:
        raise ConfigError(f"nlist ({nlist}) is larger than the corpus ({n} documents)", where="mining.nlist",
                          hint="use fewer cells (about 4 x sqrt(corpus size)) or index='flat'")
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, pq_bits, faiss.METRIC_INNER_PRODUCT)
    n_train = min(n, max(64 * nlist, 64 * 2 ** pq_bits), max(max_train, 39 * nlist))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    index.train(np.ascontiguousarray(src.rows(sample), dtype=np.float32))
    del sample
    for _, block in src.blocks(block_size):
        index.add(np.ascontiguousarray(block, dtype=np.float32))
    index.nprobe = min(nlist, nprobe or max(1, nlist // 8))
    return index


def search_ivfpq(index: Any, docs: np.ndarray | RowSource, queries: np.ndarray, k: int, *, refine: int = 4,
                 batch_size: int = 4096, max_rows: int = 65536,
                 show_progress_bar: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` with exact scores: IVF-PQ proposes ``k x refine`` candidates, their vectors (read from ``docs``)
    give the exact inner products, the best ``k`` are kept.

    Why exact: the miner's filters compare a candidate's score with the query's positive score (TopK-PercPos), and
    PQ scores are off by a few hundredths -- enough to let false negatives through. ``max_rows`` bounds the
    candidate vectors gathered at once (query batches shrink to fit).
    """
    src = as_rows(docs)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, index.ntotal))
    kc = min(index.ntotal, k * max(1, refine))
    step = max(1, min(batch_size, max_rows // kc))
    scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    if show_progress_bar is None:
        show_progress_bar = len(queries) > 10 * step
    for q0 in tqdm(range(0, len(queries), step), desc="search", unit="batch", disable=not show_progress_bar):
        q = queries[q0:q0 + step]
        _, cand = index.search(q, kc)
        valid = cand >= 0
        uniq, inv = np.unique(np.where(valid, cand, 0), return_inverse=True)
        vecs = src.rows(uniq)
        exact = np.matmul(vecs[inv.reshape(cand.shape)], q[:, :, None])[:, :, 0]
        exact[~valid] = -np.inf
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        scores[q0:q0 + len(q)] = np.take_along_axis(exact, top, axis=1)
        ids[q0:q0 + len(q)] = np.where(np.take_along_axis(valid, top, axis=1),
                                       np.take_along_axis(cand, top, axis=1), -1)
    return scores, ids
