"""B3 cluster batches: the rank window, exact-size partitions, planted hard clusters, and the cluster sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import sparse

from embedkit.errors import ConfigError
from embedkit.mining import b3
from embedkit.mining.b3 import build_b3_clusters, partition_exact, rank_window_graph, window_neighbours
from embedkit.training.sampler import ClusterBatchSampler

PARTITIONERS = ["greedy", pytest.param("metis", marks=pytest.mark.skipif(not b3._metis_available(),
                                                                        reason="pymetis is not installed"))]


def _angles(degrees: list[float]) -> np.ndarray:
    rad = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


#: unit vectors at these angles: similarity order = angular distance order, no ties
ANGLES = [0, 10, 30, 70, 115, 170]


def test_rank_window_skips_the_top_p_and_keeps_m_hand_checked() -> None:
    e = _angles(ANGLES)
    nb = window_neighbours(e, p=1, m=2)
    # example 0: others by distance 1(10) 2(30) 3(70) 4(115) 5(170) -> ranks 1, 2 = examples 2, 3
    assert nb[0].tolist() == [2, 3]
    # example 2 (30 deg): 1(20) 0(30) 3(40) 4(85) 5(140)
    assert nb[2].tolist() == [0, 3]
    # example 3 (70 deg): 2(40) 4(45) 1(60) 0(70) 5(100)
    assert nb[3].tolist() == [4, 1]
    # example 5 (170 deg): 4(55) 3(100) 2(140) 1(160) 0(170)
    assert nb[5].tolist() == [3, 2]
    # a window running past the last rank is padded with -1
    assert window_neighbours(e, p=3, m=4)[0].tolist() == [4, 5, -1, -1]


def test_rank_window_graph_is_mutual_and_weighs_two_way_links_double() -> None:
    w = rank_window_graph(_angles(ANGLES), p=1, m=2).toarray()
    assert (w == w.T).all() and (np.diag(w) == 0).all()
    assert w[0, 2] == 2  # 0 -> 2 and 2 -> 0
    assert w[0, 3] == 1  # 0 -> 3 only (3's window is 4, 1)
    assert w[0, 1] == 0  # each is the other's rank 0, which p = 1 skips
    assert w.sum() == 2 * 6 * 2  # 6 examples x 2 links, each counted in both directions


def test_ranking_is_query_to_other_positives() -> None:
    # query 0 equals its own positive exactly; the own positive is never a neighbour, the nearest *other* one is
    q = _angles([0, 90, 180])
    d = _angles([0, 20, 100])
    assert window_neighbours(q, d, p=0, m=1)[:, 0].tolist() == [1, 2, 1]
    assert window_neighbours(q, p=0, m=1)[:, 0].tolist() == [1, 0, 1]  # query -> query (90 deg ties: lower id)


def _planted(seed: int, n_random: int = 64, n_planted: int = 8, dim: int = 32) -> tuple[np.ndarray, list[int]]:
    """Random unit vectors with ``n_planted`` near-duplicates scattered among them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_random + n_planted, dim))
    planted = sorted(rng.choice(len(x), n_planted, replace=False).tolist())
    base = rng.normal(size=dim)
    x[planted] = base + 0.01 * rng.normal(size=(n_planted, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), planted


@pytest.mark.parametrize("partitioner", PARTITIONERS)
@pytest.mark.parametrize("seed", [0, 1, 2, 12, 27, 33])  # METIS alone splits 12, 27 and 33 by one member
def test_planted_hard_cluster_ends_in_one_batch_on_every_rank_pair(partitioner: str, seed: int) -> None:
    x, planted = _planted(seed)
    res = build_b3_clusters(x, cluster_size=8, p=0, m=7, seed=seed, partitioner=partitioner)
    assert res.partitioner == partitioner
    assert sorted(planted) in [sorted(c) for c in res.clusters]
    # two ranks x 4: the step that trains the planted examples holds all of them, split over the two ranks
    ranks = [ClusterBatchSampler([res.clusters], [len(x)], 4, leftovers=[res.leftover], seed=seed,
                                 num_replicas=2, rank=r) for r in range(2)]
    steps = [a + b for a, b in zip(*ranks)]
    hits = [s for s in steps if set(s) & set(planted)]
    assert len(hits) == 1 and sorted(hits[0]) == planted


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_clusters_are_exact_cover_everything_once_and_beat_random_batches(partitioner: str) -> None:
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(20, 16))
    x = centers[rng.integers(0, 20, 203)] + 0.5 * rng.normal(size=(203, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    res = build_b3_clusters(x, cluster_size=16, p=2, m=12, partitioner=partitioner)
    assert [len(c) for c in res.clusters] == [16] * 12 and len(res.leftover) == 203 % 16
    assert sorted([i for c in res.clusters for i in c] + res.leftover) == list(range(203))
    # the fraction of link weight kept inside batches, against random batches of the same size
    g = rank_window_graph(x, p=2, m=12).tocoo()
    lab = np.full(203, -1)
    lab[rng.permutation(203)[:192]] = np.arange(192) // 16
    random_share = g.data[(lab[g.row] >= 0) & (lab[g.row] == lab[g.col])].sum() / g.data.sum()
    assert res.intra_weight > 3 * random_share


@pytest.mark.parametrize("partitioner", PARTITIONERS)
def test_clusters_are_deterministic_for_a_seed(partitioner: str) -> None:
    x, _ = _planted(3, n_random=90, n_planted=6)
    a = build_b3_clusters(x, cluster_size=8, p=1, m=10, seed=7, partitioner=partitioner)
    b = build_b3_clusters(x, cluster_size=8, p=1, m=10, seed=7, partitioner=partitioner)
    assert a.clusters == b.clusters and a.leftover == b.leftover


def test_rebalancing_makes_metis_parts_exact_hand_checked() -> None:
    # parts from a partitioner: A = {0,1,2,3,4} (one too many), B = {5,6,7} (one short); size 4.
    # 4 is A's least-linked member (one link inside A) and is linked to B by weight 2 -> it moves to B
    edges = {(0, 1): 2, (0, 2): 2, (1, 2): 2, (0, 3): 2, (1, 3): 2, (3, 4): 1, (4, 5): 2, (5, 6): 2, (6, 7): 2}
    rows, cols, vals = zip(*[(i, j, w) for (i, j), w in edges.items()])
    g = sparse.coo_matrix((vals, (rows, cols)), shape=(8, 8)).tocsr()
    g = (g + g.T).tocsr()
    clusters, leftover = b3._rebalance(g, np.array([0, 0, 0, 0, 0, 1, 1, 1]), 2, 4)
    assert clusters == [[0, 1, 2, 3], [4, 5, 6, 7]] and leftover == []


def test_swap_refinement_mends_a_group_split_by_one_member_hand_checked() -> None:
    # two 4-cliques {0,1,2,3} and {4,5,6,7}, partitioned as [0,1,2,7] [3,4,5,6]: swapping 3 and 7 gains 2 x 6 - 2 x 3
    block = np.ones((4, 4), dtype=np.int64) - np.eye(4, dtype=np.int64)
    g = sparse.csr_matrix(sparse.block_diag([block, block]))
    clusters, leftover = b3._refine_swaps(g, [[0, 1, 2, 7], [3, 4, 5, 6]], [])
    assert clusters == [[0, 1, 2, 3], [4, 5, 6, 7]] and leftover == []
    # a leftover example tied to a cluster replaces that cluster's unlinked member
    clusters, leftover = b3._refine_swaps(g, [[0, 1, 2, 4]], [3])
    assert clusters == [[0, 1, 2, 3]] and leftover == [4]


def test_greedy_grows_along_links() -> None:
    # two 4-cliques joined by nothing: whatever the seed, greedy growing keeps each clique whole
    block = np.ones((4, 4), dtype=np.int64) - np.eye(4, dtype=np.int64)
    g = sparse.csr_matrix(sparse.block_diag([block, block]))
    for seed in range(5):
        res = partition_exact(g, 4, seed=seed, partitioner="greedy")
        assert sorted(res.clusters) == [[0, 1, 2, 3], [4, 5, 6, 7]] and res.intra_weight == 1.0


def test_partition_errors_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    g = rank_window_graph(_angles(ANGLES), p=0, m=2)
    with pytest.raises(ConfigError, match="fewer than one cluster") as err:
        partition_exact(g, 7)
    assert err.value.where == "data.b3" and err.value.hint
    with pytest.raises(ConfigError, match="unknown partitioner"):
        partition_exact(g, 2, partitioner="kahip")  # type: ignore[arg-type]
    monkeypatch.setattr(b3, "_metis_available", lambda: False)
    with pytest.raises(ConfigError, match="pymetis") as err:
        partition_exact(g, 2, partitioner="metis")
    assert "greedy" in (err.value.hint or "")
    assert partition_exact(g, 2, partitioner="auto").partitioner == "greedy"
    with pytest.raises(ConfigError, match="b3.p"):
        window_neighbours(_angles(ANGLES), p=-1, m=2)


# -- the sampler ---------------------------------------------------------------------------------------------------


def _clusters(n: int, size: int, seed: int) -> tuple[list[list[int]], list[int]]:
    perm = np.random.default_rng(seed).permutation(n).tolist()
    k = n // size
    return [sorted(perm[i * size:(i + 1) * size]) for i in range(k)], sorted(perm[k * size:])


SIZES = [100, 40]
GBS = 8


def _sampler(drop_last: bool = True, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
             strategy: str = "proportional") -> ClusterBatchSampler:
    parts = [_clusters(n, GBS, d) for d, n in enumerate(SIZES)]
    return ClusterBatchSampler([c for c, _ in parts], SIZES, GBS // num_replicas, leftovers=[lf for _, lf in parts],
                               seed=seed, drop_last=drop_last, num_replicas=num_replicas, rank=rank,
                               strategy=strategy)  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["proportional", "round_robin"])
def test_sampler_yields_each_cluster_once_per_epoch_and_drops_only_the_leftover(strategy: str) -> None:
    s = _sampler(strategy=strategy)
    batches = list(s)
    assert len(batches) == len(s) == 100 // GBS + 40 // GBS
    clusters = {tuple(sorted(off + i for i in c)) for off, per_ds in zip(s.offsets, s.clusters) for c in per_ds}
    assert {tuple(sorted(b)) for b in batches} == clusters  # every batch is a whole cluster, each one once
    seen = Counter(i for b in batches for i in b)
    assert max(seen.values()) == 1
    dropped = set(range(sum(SIZES))) - set(seen)
    assert dropped == {s.offsets[d] + i for d, left in enumerate(s.leftovers) for i in left}
    assert all(len({s.dataset_of(i) for i in b}) == 1 for b in batches)


def test_sampler_without_drop_last_trains_the_leftover_in_one_topped_up_batch() -> None:
    s = _sampler(drop_last=False)
    batches = list(s)
    assert len(batches) == len(s) == 13 + 5
    seen = Counter(i for b in batches for i in b)
    assert set(seen) == set(range(sum(SIZES)))  # every example at least once
    assert all(len(b) == GBS and len({s.dataset_of(i) for i in b}) == 1 for b in batches)
    # only data set 0 (100 = 12 x 8 + 4) has a leftover: 4 cluster members fill its batch and are seen twice
    assert sum(v - 1 for v in seen.values()) == GBS - 100 % GBS


def test_every_rank_takes_one_slice_of_the_same_cluster() -> None:
    one = list(_sampler())
    ranks = [list(_sampler(num_replicas=2, rank=r)) for r in range(2)]
    assert all(len(b) == GBS // 2 for r in ranks for b in r)
    assert [a + b for a, b in zip(*ranks)] == one  # rank slices put together = the one-process batch
    four = [list(_sampler(num_replicas=4, rank=r)) for r in range(4)]
    assert [sum(parts, []) for parts in zip(*four)] == one


def test_sampler_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a, b = _sampler(seed=3), _sampler(seed=3)
    assert list(a) == list(b)
    first = list(a)
    seen: list[int] = []
    a.epoch_listeners.append(seen.append)
    a.set_epoch(1)
    assert seen == [1]
    second = list(a)
    assert second != first and sorted(map(sorted, second)) == sorted(map(sorted, first))  # same clusters, new order
    b.set_epoch(1)
    assert list(b) == second
    assert list(_sampler(seed=4)) != first


def test_sampler_rejects_clusters_built_for_another_batch_size() -> None:
    clusters, leftover = _clusters(40, 8, 0)
    with pytest.raises(ConfigError, match="not one global batch of 16") as err:
        ClusterBatchSampler([clusters], [40], 8, leftovers=[leftover], num_replicas=2)
    assert err.value.where == "data.b3" and "world size" in (err.value.hint or "")
    with pytest.raises(ValueError, match="exactly once"):
        ClusterBatchSampler([clusters[:-1]], [40], 8, leftovers=[leftover])


def test_real_teacher_puts_planted_near_duplicate_pairs_in_one_cluster_through_the_cache(
        debian_pairs: str, minilm_path: str, tmp_path) -> None:
    import json

    from sentence_transformers import SentenceTransformer

    from embedkit.data.schema import Pair
    from embedkit.mining.b3 import build_b3_for_datasets
    from embedkit.mining.miner import MiningStats

    with open(debian_pairs, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    pairs = [Pair(query=r["query"], positives=list(r["positives"])) for r in rows]
    fruits = ["apple", "pear", "plum", "cherry", "peach", "apricot", "quince", "mango"]
    planted = [Pair(query=f"tool to bake {f} pie recipes in the oven",
                    positives=[f"This program bakes {f} pies: it reads recipes and drives the oven timer."])
               for f in fruits]
    mixed = pairs[:20] + planted[:4] + pairs[20:] + planted[4:]
    ids = [mixed.index(x) for x in planted]
    teacher = SentenceTransformer(minilm_path, device="cpu")
    teacher.max_seq_length = 64  # short and quick: the descriptions' first lines are enough to rank them
    stats = MiningStats()
    (res,) = build_b3_for_datasets([mixed], teacher, cluster_size=8, p=0, m=7, cache_dir=tmp_path, stats=stats)
    assert len(res.clusters) == len(mixed) // 8 and all(len(c) == 8 for c in res.clusters)
    assert sorted(ids) in res.clusters
    assert stats.encoded == 2 * len(mixed)
    again = MiningStats()
    (res2,) = build_b3_for_datasets([mixed], teacher, cluster_size=8, p=0, m=7, cache_dir=tmp_path, stats=again)
    assert again.encoded == 0 and again.from_cache == 2 * len(mixed) and res2.clusters == res.clusters


def test_a_b3_recipe_trains_on_the_clusters_and_puts_the_planted_group_in_one_batch(
        debian_pairs: str, minilm_path: str, tmp_path, monkeypatch) -> None:
    """``data.batching: b3`` end to end: the trainer's batches are exactly the clusters, one a step."""
    import json

    from embedkit.training.config import parse_recipe
    from embedkit.training.runner import run_recipe
    from embedkit.training.trainer import EmbeddingTrainer

    rows = [json.loads(line) for line in open(debian_pairs, encoding="utf-8")][:40]
    fruits = ["apple", "pear", "plum", "cherry", "peach", "apricot", "quince", "mango"]
    planted = [{"query": f"tool to bake {f} pie recipes in the oven",
                "positives": [f"This program bakes {f} pies: it reads recipes and drives the oven timer."]}
               for f in fruits]
    mixed = rows[:20] + planted[:4] + rows[20:] + planted[4:]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in mixed), encoding="utf-8")
    planted_ids = sorted(i for i, r in enumerate(mixed) if r in planted)
    seen: list[list[int]] = []
    made = EmbeddingTrainer.make_sampler

    def spy(self):
        sampler = made(self)
        seen.extend(sorted(b) for b in sampler)
        return sampler

    monkeypatch.setattr(EmbeddingTrainer, "make_sampler", spy)
    recipe = parse_recipe({
        "model": {"name": minilm_path, "max_seq_length": 48},
        "data": {"datasets": [{"path": str(path), "max_negatives": 0}], "batching": "b3",
                 "b3": {"p": 0, "m": 7, "partitioner": "greedy"}},
        "training": {"batch_size": 8, "max_steps": 2, "logging_steps": 1}, "output": {"save_steps": None}})
    run_recipe(recipe, tmp_path / "run")
    assert seen and all(len(b) == 8 for b in seen)
    assert planted_ids in seen  # the near-duplicates are one batch: each other's hard in-batch negatives
    assert len(seen) == len(mixed) // 8 and sorted(i for b in seen for i in b) == list(range(len(mixed)))


def test_b3_settings_without_b3_batching_are_refused() -> None:
    from embedkit.training.config import parse_recipe

    with pytest.raises(ConfigError, match="'data.b3' is set but 'data.batching' is 'random'"):
        parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}], "b3": {"p": 10}}})
    r = parse_recipe({"data": {"datasets": [{"path": "p.jsonl"}], "batching": "b3"}})
    assert r.data.b3 is None and r.data.batching == "b3"  # B3's defaults (p 30, m 100)
