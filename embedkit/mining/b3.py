"""B3 cluster batches: batches whose in-batch negatives are each other's hard negatives.

B3 ("Breaking the Batch Barrier", Thakur et al. 2025) builds every batch from examples a teacher finds
*moderately* similar, so that the other rows' positives in a batch are hard negatives. Three steps:

1. **Rank.** A teacher (any bi-encoder) embeds every training example. Example ``j``'s rank for example ``i`` is
   the rank of ``j``'s *positive* among all other examples' positives when searched with ``i``'s *query*
   (``sim(q_i, d_j)``, ``j != i``; rank 0 = most similar). Why query -> positive and not query -> query: in a
   contrastive batch, row ``i`` is scored against the other rows' positives, so that is the similarity that makes a
   batch hard. Pass ``doc_emb=None`` to rank by query -> query instead (pairs without usable positives).
2. **Graph.** Link ``i`` to the examples at ranks ``[p, p + m)`` (B3: ``p = 30``, ``m = 100``). The top ``p`` are
   skipped on purpose: they are the likeliest false negatives (duplicates of ``i``'s positive). Links are made
   mutual -- the graph is undirected, as the partitioner needs -- and a pair that sits in *both* windows weighs 2.
3. **Partition.** Cut the graph into clusters of exactly ``cluster_size`` examples (the **global** batch size,
   ``per-device batch x world size``, so that under DDP every rank trains on a slice of one cluster). With
   ``pymetis`` installed (a binding that ships METIS itself, as B3's code uses METIS) METIS's recursive bisection
   makes ``n // size`` parts, then a rebalancing pass makes them exactly ``size``: an over-full part gives up the
   members with the fewest links inside it, and under-full parts take the free examples with the most links to
   them. Without ``pymetis`` (or with ``partitioner="greedy"``) a greedy graph-growing clustering is used: seeds
   in order of weighted degree, each cluster absorbing the free example with the most links into it (or, when
   none is linked, the one most similar to its mean vector). Both end with a swap refinement (pairs of examples
   trade clusters while that keeps more link weight inside clusters), which mends dense groups split by one
   member. Both are deterministic for a seed; on a clustered 5,000-example test set both keep ~13x the link
   weight that random batches keep (``B3Clusters.intra_weight``).

The ``n % size`` examples that fit no cluster are the **leftover**; the refinement swaps strongly linked ones into
clusters, so the leftover tends to be the weakest-linked. :class:`~embedkit.training.sampler.ClusterBatchSampler` drops
it (``drop_last``) or trains it in one topped-up batch.

Example:
    >>> import numpy as np
    >>> from embedkit.mining.b3 import build_b3_clusters
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(20, 8)).astype("float32")
    >>> res = build_b3_clusters(emb, cluster_size=4, p=0, m=3, partitioner="greedy")
    >>> [len(c) for c in res.clusters], sorted(i for c in res.clusters for i in c) == list(range(20))
    ([4, 4, 4, 4, 4], True)
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import sparse

from embedkit.errors import ConfigError

if TYPE_CHECKING:
    import os

    from sentence_transformers import SentenceTransformer

__all__ = ["B3Clusters", "b3_embeddings", "build_b3_clusters", "build_b3_for_datasets", "partition_exact",
           "rank_window_graph", "window_neighbours"]

logger = logging.getLogger(__name__)

Partitioner = Literal["auto", "metis", "greedy"]


@dataclass
class B3Clusters:
    """The result of :func:`build_b3_clusters` (indices are local to the data set the embeddings came from).

    Attributes:
        clusters: ``n // cluster_size`` lists of exactly ``cluster_size`` example indices.
        leftover: the ``n % cluster_size`` examples in no cluster.
        partitioner: ``"metis"`` or ``"greedy"`` (what ``"auto"`` resolved to).
        intra_weight: total edge weight inside clusters over the graph's total (1.0 = no link was cut): the higher,
            the harder the batches.
    """

    clusters: list[list[int]]
    leftover: list[int] = field(default_factory=list)
    partitioner: str = "greedy"
    intra_weight: float = 0.0


def _check_window(p: int, m: int) -> None:
    if p < 0:
        raise ConfigError(f"b3.p must be >= 0 (got {p})", where="data.b3.p",
                          hint="the number of top-ranked examples to skip (B3 uses 30)")
    if m < 1:
        raise ConfigError(f"b3.m must be >= 1 (got {m})", where="data.b3.m",
                          hint="the number of ranks linked after the first p (B3 uses 100)")


def window_neighbours(query_emb: np.ndarray, doc_emb: np.ndarray | None = None, *, p: int = 30,
                      m: int = 100) -> np.ndarray:
    """For each example, the examples at ranks ``[p, p + m)`` (exact FAISS search, the example itself excluded).

    Returns an ``(n, m)`` int64 array, best rank first; a row is padded with ``-1`` where fewer than ``p + m``
    other examples exist.

    Example:
        >>> import numpy as np
        >>> e = np.array([[1, 0], [0.9, 0.1], [0.5, 0.5], [0, 1]], dtype="float32")
        >>> window_neighbours(e, p=1, m=2)[0].tolist()   # example 0: rank 0 = 1, rank 1 = 2, rank 2 = 3
        [2, 3]
    """
    from embedkit.mining.index import build_index, search

    _check_window(p, m)
    q = np.ascontiguousarray(query_emb, dtype=np.float32)
    d = q if doc_emb is None else np.ascontiguousarray(doc_emb, dtype=np.float32)
    if q.ndim != 2 or d.shape != q.shape:
        raise ValueError(f"query and document embeddings must both be (n, dim), got {q.shape} and {d.shape}")
    n = len(q)
    k = min(n, p + m + 1)  # +1: the example itself is (almost always) among its own hits
    _, ids = search(build_index(d, "flat", use_gpu=False), q, k, show_progress_bar=False)
    out = np.full((n, m), -1, dtype=np.int64)
    for i in range(n):
        row = [int(j) for j in ids[i] if j >= 0 and j != i][p:p + m]
        out[i, :len(row)] = row
    return out


def rank_window_graph(query_emb: np.ndarray, doc_emb: np.ndarray | None = None, *, p: int = 30,
                      m: int = 100) -> sparse.csr_matrix:
    """The symmetric B3 graph: ``w[i, j]`` = 1 if one of ``i``, ``j`` is in the other's rank window, 2 if both.

    Example:
        >>> import numpy as np
        >>> e = np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype="float32")
        >>> rank_window_graph(e, p=0, m=1).toarray().tolist()   # 0 <-> 1 both ways, 2 -> 1 one way
        [[0, 2, 0], [2, 0, 1], [0, 1, 0]]
    """
    nb = window_neighbours(query_emb, doc_emb, p=p, m=m)
    n = len(nb)
    rows = np.repeat(np.arange(n), nb.shape[1])
    cols = nb.reshape(-1)
    keep = cols >= 0
    directed = sparse.csr_matrix((np.ones(int(keep.sum()), dtype=np.int64), (rows[keep], cols[keep])),
                                 shape=(n, n))
    return (directed + directed.T).tocsr()


def _metis_available() -> bool:
    try:
        import pymetis  # noqa: F401
    except ImportError:
        return False
    return True


def _metis_parts(graph: sparse.csr_matrix, nparts: int, seed: int) -> np.ndarray:
    import pymetis

    # recursive bisection keeps METIS's parts within +-1-2 of the target size (its default 0.1 % imbalance); k-way
    # with the same tight ufactor cut twice as many links on a clustered test set, loose k-way evicts more members
    options = pymetis.Options(seed=int(seed) % (2**31 - 1))
    result = pymetis.part_graph(nparts, xadj=graph.indptr.tolist(), adjncy=graph.indices.tolist(),
                                eweights=graph.data.astype(np.int64).tolist(), options=options, recursive=True)
    return np.asarray(result[1], dtype=np.int64)


def _rebalance(graph: sparse.csr_matrix, labels: np.ndarray, nparts: int, size: int) -> tuple[list[list[int]],
                                                                                              list[int]]:
    """Make METIS's nearly balanced parts exactly ``size`` each; the examples that fit nowhere are the leftover.

    Over-full parts evict their least-linked members (ties: the higher index). Then, over all (free example,
    under-full part) pairs, the pair with the most link weight is joined first (a lazy max-heap, updated as
    members join); under-full parts that no free example links to take the lowest free indices.
    """
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    label = np.asarray(labels, dtype=np.int64).copy()
    members: list[list[int]] = [[] for _ in range(nparts)]
    for i, lab in enumerate(label.tolist()):
        members[lab].append(i)
    for k in range(nparts):
        if len(members[k]) > size:
            ties = {i: int(data[indptr[i]:indptr[i + 1]][label[indices[indptr[i]:indptr[i + 1]]] == k].sum())
                    for i in members[k]}
            ranked = sorted(members[k], key=lambda i: (-ties[i], i))
            members[k] = ranked[:size]
            label[ranked[size:]] = -1
    counts = [len(c) for c in members]
    weight: dict[tuple[int, int], int] = {}
    heap: list[tuple[int, int, int]] = []  # (-weight, example, part)

    def link(i: int, part: int, w: int) -> None:
        weight[i, part] = weight.get((i, part), 0) + w
        heapq.heappush(heap, (-weight[i, part], i, part))

    for i in np.flatnonzero(label < 0).tolist():
        row = slice(indptr[i], indptr[i + 1])
        for j, w in zip(indices[row].tolist(), data[row].tolist()):
            if label[j] >= 0 and counts[label[j]] < size:
                link(i, int(label[j]), int(w))
    while heap:
        g, i, part = heapq.heappop(heap)
        if label[i] >= 0 or counts[part] >= size or -g != weight[i, part]:
            continue
        label[i] = part
        members[part].append(i)
        counts[part] += 1
        if counts[part] < size:
            row = slice(indptr[i], indptr[i + 1])
            for j, w in zip(indices[row].tolist(), data[row].tolist()):
                if label[j] < 0:
                    link(j, part, int(w))
    free = np.flatnonzero(label < 0).tolist()
    for k in range(nparts):
        while counts[k] < size and free:
            i = free.pop(0)
            label[i] = k
            members[k].append(i)
            counts[k] += 1
    return [sorted(c) for c in members if len(c) == size], sorted(free)


def _greedy_parts(graph: sparse.csr_matrix, size: int, emb: np.ndarray | None, seed: int) -> tuple[list[list[int]],
                                                                                                   list[int]]:
    """Greedy graph growing into clusters of exactly ``size`` (see the module docstring).

    Seeds are taken by weighted degree, highest first (ties in a seeded order): a dense group -- near-duplicates
    of one another -- is grown from one of its own members and stays whole, instead of being nibbled at by
    clusters grown nearby. Each cluster then absorbs the free example with the most link weight into it (a lazy
    max-heap); when no free example is linked, the free one most similar to the cluster's mean vector.
    """
    n = graph.shape[0]
    degree = np.asarray(graph.sum(axis=1)).reshape(-1)
    tie = np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tie, -degree)).tolist()
    vec = np.asarray(emb, dtype=np.float64) if emb is not None else np.zeros((n, 1))
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    free = np.ones(n, dtype=bool)
    clusters: list[list[int]] = []
    cursor = 0
    for _ in range(n // size):
        while not free[order[cursor]]:
            cursor += 1
        start = order[cursor]
        cluster = [start]
        free[start] = False
        gain: dict[int, int] = {}
        heap: list[tuple[int, int, int]] = []  # (-gain, rank in the seed order, index): lazy max-heap

        def add_links(i: int) -> None:
            for j, w in zip(indices[indptr[i]:indptr[i + 1]].tolist(), data[indptr[i]:indptr[i + 1]].tolist()):
                if free[j]:
                    gain[j] = gain.get(j, 0) + int(w)
                    heapq.heappush(heap, (-gain[j], int(tie[j]), j))

        add_links(start)
        total = vec[start].copy()
        while len(cluster) < size:
            pick = -1
            while heap:
                g, _, j = heapq.heappop(heap)
                if free[j] and -g == gain.get(j):
                    pick = j
                    break
            if pick < 0:  # nothing linked is free: the free example closest to the cluster's mean vector
                cand = np.flatnonzero(free)
                pick = int(cand[np.argmax(vec[cand] @ total)])
            cluster.append(pick)
            free[pick] = False
            total += vec[pick]
            add_links(pick)
        clusters.append(sorted(cluster))
    return clusters, np.flatnonzero(free).tolist()


#: the swap refinement keeps an (examples x clusters) table of link weights; above this many cells it is skipped
REFINE_MAX_CELLS = 25_000_000


def _refine_swaps(graph: sparse.csr_matrix, clusters: list[list[int]], leftover: list[int],
                  passes: int = 3) -> tuple[list[list[int]], list[int]]:
    """Improve exact-size clusters by pairwise swaps (Kernighan-Lin style), sizes unchanged.

    For each example ``i`` whose links pull it to another cluster ``b`` more than to its own (strongest pull
    first), the member ``j`` of ``b`` whose swap with ``i`` raises the in-cluster link weight most,
    ``w_b(i) - w_a(i) + w_a(j) - w_b(j) - 2 w(i, j)``, swaps with it when that is positive. The leftover takes
    part as a pseudo-cluster whose links count for nothing, so a strongly linked leftover example replaces a
    weakly linked member. Why: tight-balance partitions (METIS at 0.1 % imbalance, greedy growing near a
    cluster's end) sometimes split a dense group by one member; one swap puts it back. The table of link weights
    ``pull[x, c]`` is kept exact through the swaps; sets over :data:`REFINE_MAX_CELLS` cells are left as they are.
    """
    n, k = graph.shape[0], len(clusters)
    if n * (k + 1) > REFINE_MAX_CELLS:
        logger.info("B3: %d examples x %d clusters: swap refinement skipped", n, k)
        return clusters, leftover
    label = np.full(n, k, dtype=np.int64)  # k = the leftover pseudo-cluster
    for c, members in enumerate(clusters):
        label[members] = c
    indptr, indices, data = graph.indptr, graph.indices, graph.data
    onehot = sparse.csr_matrix((np.ones(n, dtype=np.int64), (np.arange(n), label)), shape=(n, k + 1))
    pull = np.asarray((graph @ onehot).toarray(), dtype=np.int64)
    pull[:, k] = 0  # links into the leftover count for nothing

    def move(x: int, src: int, dst: int) -> None:
        row = slice(indptr[x], indptr[x + 1])
        if src != k:
            np.subtract.at(pull[:, src], indices[row], data[row])
        if dst != k:
            np.add.at(pull[:, dst], indices[row], data[row])
        label[x] = dst

    members = [np.asarray(c, dtype=np.int64) for c in clusters] + [np.asarray(leftover, dtype=np.int64)]
    for _ in range(passes):
        own = pull[np.arange(n), label]
        other = pull.copy()
        other[np.arange(n), label] = -1
        other[:, k] = -1
        best = other.argmax(axis=1)
        excess = other[np.arange(n), best] - own
        moved = np.zeros(n, dtype=bool)
        swaps = 0
        for i in np.argsort(-excess, kind="stable")[: int((excess > 0).sum())].tolist():
            a, b = int(label[i]), int(best[i])
            if moved[i] or pull[i, b] <= pull[i, a]:
                continue
            mb = members[b][~moved[members[b]]]
            if not len(mb):
                continue
            row = slice(indptr[i], indptr[i + 1])
            nb = indices[row]  # sorted (partition_exact sorts the graph's indices)
            w_ij = np.zeros(len(mb), dtype=np.int64)
            if len(nb):
                pos = np.minimum(np.searchsorted(nb, mb), len(nb) - 1)
                hit = nb[pos] == mb
                w_ij[hit] = data[row][pos[hit]]
            gain = pull[i, b] - pull[i, a] + pull[mb, a] - pull[mb, b] - (1 if a == k else 2) * w_ij
            pick = int(np.argmax(gain))
            if gain[pick] <= 0:
                continue
            j = int(mb[pick])
            move(i, a, b)
            move(j, b, a)
            members[a] = np.append(members[a][members[a] != i], j)
            members[b] = np.append(members[b][members[b] != j], i)
            moved[[i, j]] = True
            swaps += 1
        if not swaps:
            break
    return [sorted(c.tolist()) for c in members[:k]], sorted(members[k].tolist())


def partition_exact(graph: sparse.csr_matrix, size: int, *, emb: np.ndarray | None = None, seed: int = 0,
                    partitioner: Partitioner = "auto") -> B3Clusters:
    """Cut a symmetric weighted graph into ``n // size`` clusters of exactly ``size`` nodes (see module docstring).

    Args:
        graph: symmetric ``(n, n)`` CSR matrix of integer edge weights, no self loops.
        size: cluster size (the global batch size).
        emb: ``(n, dim)`` teacher vectors; the greedy partitioner breaks ties between links and between groups by
            their similarity (default: none, ties go by the seeded order / lower index).
        seed: METIS's seed, or the greedy partitioner's tie order.
        partitioner: ``"metis"`` (needs ``pymetis``), ``"greedy"``, or ``"auto"`` (METIS when installed).
    """
    n = graph.shape[0]
    if size < 1:
        raise ConfigError(f"cluster size must be >= 1 (got {size})", where="training.batch_size")
    if n < size:
        raise ConfigError(f"{n} examples are fewer than one cluster of {size}", where="data.b3",
                          hint="use a smaller training.batch_size or more data")
    if partitioner not in ("auto", "metis", "greedy"):
        raise ConfigError(f"unknown partitioner {partitioner!r}", where="data.b3.partitioner",
                          hint="use auto, metis or greedy")
    if partitioner == "metis" and not _metis_available():
        raise ConfigError("the metis partitioner needs the pymetis package", where="data.b3.partitioner",
                          hint="pip install pymetis, or set data.b3.partitioner: greedy")
    use = "metis" if partitioner == "metis" or (partitioner == "auto" and _metis_available()) else "greedy"
    graph = sparse.csr_matrix(graph)
    graph.sort_indices()
    nparts = n // size
    if use == "metis" and nparts > 1:
        clusters, leftover = _rebalance(graph, _metis_parts(graph, nparts, seed), nparts, size)
    elif use == "metis":  # one part: METIS has nothing to cut, the rebalancing pass does it all
        clusters, leftover = _rebalance(graph, np.zeros(n, dtype=np.int64), 1, size)
    else:
        clusters, leftover = _greedy_parts(graph, size, emb, seed)
    clusters, leftover = _refine_swaps(graph, clusters, leftover)
    label = np.full(n, -1, dtype=np.int64)
    for k, c in enumerate(clusters):
        label[c] = k
    coo = graph.tocoo()
    total = float(coo.data.sum())
    inside = float(coo.data[(label[coo.row] >= 0) & (label[coo.row] == label[coo.col])].sum())
    return B3Clusters(clusters, leftover, use, inside / total if total else 0.0)


def build_b3_clusters(query_emb: np.ndarray, doc_emb: np.ndarray | None = None, *, cluster_size: int,
                      p: int = 30, m: int = 100, seed: int = 0, partitioner: Partitioner = "auto") -> B3Clusters:
    """Rank, link ``[p, p + m)`` and partition one data set's examples into B3 clusters of ``cluster_size``.

    Args:
        query_emb: ``(n, dim)`` L2-normalised teacher embeddings of the queries.
        doc_emb: ``(n, dim)`` embeddings of each example's (first) positive; ``None`` ranks query -> query.
        cluster_size: the global batch size (per-device batch size x world size).
        p / m: skip the top ``p`` ranks, link the next ``m`` (B3: 30 and 100).
        seed / partitioner: see :func:`partition_exact`.
    """
    graph = rank_window_graph(query_emb, doc_emb, p=p, m=m)
    vectors = np.asarray(query_emb if doc_emb is None else doc_emb, dtype=np.float32)
    result = partition_exact(graph, cluster_size, emb=vectors, seed=seed, partitioner=partitioner)
    logger.info("B3: %d clusters of %d (%s), %d leftover, %.0f%% of link weight inside clusters",
                len(result.clusters), cluster_size, result.partitioner, len(result.leftover),
                100 * result.intra_weight)
    return result


def b3_embeddings(model: SentenceTransformer, queries: Sequence[str], positives: Sequence[str] | None, *,
                  batch_size: int = 32, cache_dir: str | os.PathLike | None = None,
                  source: str | os.PathLike | None = None, **kwargs: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The teacher's ``(query_emb, doc_emb)`` for :func:`build_b3_clusters`, through the mining embedding cache.

    The queries are encoded with the model's query prompt and the positives with its document prompt, exactly as
    the offline miner does, so a teacher that already mined the same data reuses its cached vectors.

    Example:
        >>> q, d = b3_embeddings(teacher, [p.query for p in pairs], [p.positives[0] for p in pairs],
        ...                      cache_dir="cache")  # doctest: +SKIP
    """
    from embedkit.mining.miner import embed_texts

    q = embed_texts(model, list(queries), role="query", batch_size=batch_size, cache_dir=cache_dir, source=source,
                    **kwargs)
    if positives is None:
        return q, None
    d = embed_texts(model, list(positives), role="document", batch_size=batch_size, cache_dir=cache_dir,
                    source=source, **kwargs)
    return q, d


def build_b3_for_datasets(datasets: Sequence[Sequence[Any]], model: SentenceTransformer, *, cluster_size: int,
                          p: int = 30, m: int = 100, seed: int = 0, partitioner: Partitioner = "auto",
                          rank_by: Literal["positive", "query"] = "positive", batch_size: int = 32,
                          cache_dir: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                          **kwargs: Any) -> list[B3Clusters]:
    """B3 clusters for each data set of ``Pair`` records (clusters never mix data sets: batches stay homogeneous).

    ``rank_by="positive"`` ranks by query -> other examples' first positive (the default, see the module
    docstring), ``"query"`` by query -> query. The teacher's vectors go through the mining embedding cache when
    ``cache_dir`` is set, so a rebuild (a resumed run, another epoch count) encodes nothing again.

    Example:
        >>> from embedkit.training.sampler import ClusterBatchSampler
        >>> parts = build_b3_for_datasets(ds.datasets, teacher, cluster_size=64, cache_dir="cache")  # doctest: +SKIP
        >>> sampler = ClusterBatchSampler([r.clusters for r in parts], ds.sizes, 64,
        ...                               leftovers=[r.leftover for r in parts])  # doctest: +SKIP
    """
    if rank_by not in ("positive", "query"):
        raise ConfigError(f"unknown b3.rank_by {rank_by!r}", where="data.b3.rank_by", hint="use positive or query")
    out: list[B3Clusters] = []
    for d, pairs in enumerate(datasets):
        if len(pairs) < cluster_size:
            raise ConfigError(f"data set #{d} has {len(pairs)} pairs, fewer than one cluster of {cluster_size}",
                              where=f"data.datasets.{d}", hint="use a smaller training.batch_size or more data")
        queries = [pr.query for pr in pairs]
        positives = [pr.positives[0] for pr in pairs] if rank_by == "positive" else None
        q, doc = b3_embeddings(model, queries, positives, batch_size=batch_size, cache_dir=cache_dir, source=source,
                               **kwargs)
        out.append(build_b3_clusters(q, doc, cluster_size=cluster_size, p=p, m=m, seed=seed,
                                     partitioner=partitioner))
    return out
