"""FAISS nearest-neighbour search for mining: exact flat by default, IVF or HNSW for large corpora, GPU if present.

Vectors are L2-normalised by the miner, so inner product = cosine similarity. ``flat`` is exact and the right
choice up to a few hundred thousand documents; ``ivf`` (inverted lists, ``nprobe`` of ``nlist`` cells visited) and
``hnsw`` (graph) trade a little recall for >10x faster search on millions (``eval/bench_mining.py`` measures it).
On a machine with FAISS-GPU, flat and IVF indexes move to all GPUs (HNSW has no GPU version in FAISS).

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
from typing import Any, Literal

import faiss
import numpy as np
from tqdm.auto import tqdm

from embedkit.errors import ConfigError

__all__ = ["build_index", "default_nlist", "gpu_count", "search"]

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
