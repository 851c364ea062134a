"""Sharded corpus encoding under torchrun: 2 CPU processes give the same cache and output as 1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedkit.data.readers import load_pairs, write_pairs


def _cache_vectors(root: Path) -> dict[bytes, np.ndarray]:
    out: dict[bytes, np.ndarray] = {}
    for keys in root.rglob("shard-*.keys.npy"):
        emb = np.load(keys.with_name(keys.name.replace(".keys.npy", ".npy")), allow_pickle=False)
        for k, v in zip(np.load(keys, allow_pickle=False), emb):
            out[k.tobytes()] = v
    return out


@pytest.mark.slow
def test_two_rank_torchrun_equals_one_process(tiny_bert, debian_pairs, mine_one_and_two, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(debian_pairs[:60], pairs)
    one, two = mine_one_and_two(["mine", "--pairs", str(pairs), "--model", tiny_bert, "--num-negatives", "3",
                                 "--shard-size", "16"], tmp_path)
    # 60 docs and 60 queries, shards of 16 (longest first): rank 0 takes shards 0 and 2, rank 1 shards 1 and 3
    assert "texts encoded: 120, read from cache: 0 (encoded per rank: 64, 56)" in two.stderr, two.stderr[-1500:]
    assert "texts encoded: 120, read from cache: 0\n" in one.stderr
    v1, v2 = _cache_vectors(tmp_path / "c1"), _cache_vectors(tmp_path / "c2")
    assert len(v1) == len(v2) == 120 and v1.keys() == v2.keys()
    for k in v1:
        np.testing.assert_allclose(v1[k], v2[k], atol=1e-5)
    assert len(list((tmp_path / "c2").rglob("shard-*.keys.npy"))) == 8  # ceil(60/16) docs + ceil(60/16) queries
    a, b = load_pairs(tmp_path / "one.jsonl"), load_pairs(tmp_path / "two.jsonl")
    assert [p.negatives for p in a] == [p.negatives for p in b]
    assert two.stderr.count("wrote 60 records") == 1  # only rank 0 writes
