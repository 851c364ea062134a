"""On-disk cache of teacher scores: score each (query, document) pair once, whatever run asks for it again.

Why: a cross-encoder teacher is the slowest stage of mining (one transformer pass per *pair*, 20 or more pairs per
query for listwise distillation), and mining is re-run often -- other filters, more data, an interrupted job. The
cache keys every score by ``(teacher fingerprint, blake2b(query), blake2b(document))``: the fingerprint
(:meth:`embedkit.mining.teacher.Teacher.fingerprint`) hashes the teacher's weight files (names, sizes, mtimes), its
folder and kind, so a retrained teacher, or another one, never reuses these scores.

It is :class:`embedkit.mining.cache.EmbeddingCache` with one-column "embeddings" (the score) and 32-byte keys (the
two text digests of :func:`embedkit.mining.cache.text_digests` side by side), so it shares that cache's layout,
atomic shard writes and ``torchrun`` split::

    <cache_dir>/scores/<namespace>/meta.json               the teacher fingerprint (for humans)
    <cache_dir>/scores/<namespace>/shard-<hash>.npy        float32 (n, 1) scores
    <cache_dir>/scores/<namespace>/shard-<hash>.keys.npy   uint8 (n, 32) query + document digests (written last)

A shard is written as soon as its pairs are scored, so an interrupted run resumes from the finished shards. Clear
it with ``rm -r <cache_dir>/scores`` (one teacher: the namespace folder whose ``meta.json`` names it).

Example:
    >>> import numpy as np, tempfile
    >>> from embedkit.mining.scores import ScoreCache
    >>> calls = []
    >>> def fake_teacher(pairs):
    ...     calls.append(len(pairs))
    ...     return np.array([len(d) for _, d in pairs], dtype=np.float32)
    >>> cache = ScoreCache(tempfile.mkdtemp(), {"model": "fake"})
    >>> cache.get_or_score([("q", "ab"), ("q", "abc")], fake_teacher).tolist()
    [2.0, 3.0]
    >>> cache.get_or_score([("q", "abc"), ("q", "ab")], fake_teacher).tolist()   # from disk, in the order asked
    [3.0, 2.0]
    >>> calls
    [2]
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from embedkit.mining.cache import EmbeddingCache, text_digests
from embedkit.mining.distributed import barrier, rank_world
from embedkit.mining.teacher import Teacher

__all__ = ["SCORE_CACHE_VERSION", "ScoreCache", "TeacherScorer", "pair_digests"]

logger = logging.getLogger(__name__)

SCORE_CACHE_VERSION = 1

#: ``score_fn([(query, document), ...])`` -> float32 scores, one per pair
PairScoreFn = Callable[[list[tuple[str, str]]], np.ndarray]


def pair_digests(pairs: Sequence[tuple[str, str]]) -> np.ndarray:
    """``(n, 32)`` uint8 keys: the query's 16-byte digest, then the document's (unambiguous, no separator)."""
    if not pairs:
        return np.zeros((0, 32), dtype=np.uint8)
    queries = list(dict.fromkeys(q for q, _ in pairs))  # many pairs share a query: hash each once
    q_dig = text_digests(queries)
    q_row = {q: i for i, q in enumerate(queries)}
    return np.hstack([q_dig[[q_row[q] for q, _ in pairs]], text_digests([d for _, d in pairs])])


class ScoreCache(EmbeddingCache):
    """Content-addressed teacher scores for one teacher (``teacher_key``: :meth:`Teacher.fingerprint`).

    Args:
        cache_dir: the embedding cache root; scores live in its ``scores/`` sub-folder.
        teacher_key: JSON-serialisable description of everything that determines a score besides the texts.
        shard_size: pairs per shard (the unit of resumption and of the split between ranks).
    """

    def __init__(self, cache_dir: str | os.PathLike, teacher_key: dict[str, Any], shard_size: int = 4096) -> None:
        super().__init__(Path(cache_dir) / "scores", {"version": SCORE_CACHE_VERSION, "teacher": teacher_key},
                         shard_size=shard_size)
        #: seconds spent inside ``score_fn`` (for the pairs/s figure)
        self.seconds = 0.0

    def get_or_score(self, pairs: Sequence[tuple[str, str]], score_fn: PairScoreFn, *, desc: str = "teacher",
                     show_progress_bar: bool | None = None, collective: bool = True) -> np.ndarray:
        """float32 scores of ``pairs`` in input order; only pairs missing from the cache are scored.

        ``score_fn`` gets one shard (``shard_size`` pairs) per call. With ``collective`` (the default) and a
        ``torch.distributed`` group, every rank must call this with the same ``pairs``: each scores its slice of
        the missing shards, and all read the merged result. ``collective=False`` scores everything in this process
        (rank 0 alone, after the others are done).
        """
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        digests = pair_digests(pairs)
        index, shards = self._index()
        missing: dict[bytes, int] = {}
        for i, d in enumerate(digests):
            key = d.tobytes()
            if key not in index and key not in missing:
                missing[key] = i
        rank, world = rank_world() if collective else (0, 1)
        if collective:
            barrier()  # every rank has read the same cache state before anyone writes
        todo = list(missing.values())  # input order: pairs of one query stay together
        self.hits = len(pairs) - sum(1 for d in digests if d.tobytes() in missing)
        if todo:
            chunks = [todo[i:i + self.shard_size] for i in range(0, len(todo), self.shard_size)]
            mine = chunks[rank::world]
            if show_progress_bar is None:
                show_progress_bar = len(todo) > 1000
            with tqdm(total=sum(len(c) for c in mine), desc=f"{desc} (rank {rank})" if world > 1 else desc,
                      unit="pair", disable=not show_progress_bar) as bar:
                for chunk in mine:
                    t0 = time.perf_counter()
                    got = np.asarray(score_fn([pairs[i] for i in chunk]), dtype=np.float32).reshape(-1)
                    self.seconds += time.perf_counter() - t0
                    if got.shape[0] != len(chunk):
                        raise RuntimeError(f"score_fn returned {got.shape[0]} scores for {len(chunk)} pairs")
                    self._write_shard(digests[chunk], got[:, None])
                    self.encoded += len(chunk)
                    bar.update(len(chunk))
            if collective:
                barrier()
            index, shards = self._index()
        return self._gather(digests, index, shards)[:, 0].copy()


class TeacherScorer:
    """Scores (query, document) pairs with a :class:`Teacher`, through a :class:`ScoreCache` when ``cache_dir`` is
    set, in shards of ``shard_size`` pairs with one progress bar; counts what it scored for the summary.

    Example:
        >>> scorer = TeacherScorer(Teacher.load("teachers/ce"), cache_dir=".embedkit_cache")   # doctest: +SKIP
        >>> scorer.score([("how to list files", "ls lists directory contents")])              # doctest: +SKIP
        array([0.93], dtype=float32)
        >>> scorer.scored, scorer.from_cache                                                 # doctest: +SKIP
        (1, 0)
    """

    def __init__(self, teacher: Teacher, cache_dir: str | os.PathLike | None = None, *, shard_size: int = 4096,
                 show_progress_bar: bool | None = None) -> None:
        self.teacher = teacher
        self.shard_size = shard_size
        self.show_progress_bar = show_progress_bar
        self.cache = None if cache_dir is None else ScoreCache(cache_dir, teacher.fingerprint(), shard_size)
        #: pairs this process sent to the teacher / read from the cache; seconds inside the teacher
        self.scored = 0
        self.from_cache = 0
        self.seconds = 0.0

    def _call(self, chunk: list[tuple[str, str]]) -> np.ndarray:
        score_pairs = getattr(self.teacher, "score_pairs", None)
        if score_pairs is not None:
            return np.asarray(score_pairs(chunk))
        # any object with Teacher.score_lists (e.g. a hand-made teacher in a test) scores one pair per list
        got = self.teacher.score_lists([q for q, _ in chunk], [[d] for _, d in chunk])
        return np.asarray([row[0] for row in got], dtype=np.float64)

    def score(self, pairs: Sequence[tuple[str, str]], *, collective: bool = True) -> np.ndarray:
        """Scores of ``pairs`` in order (see :meth:`ScoreCache.get_or_score` for ``collective``).

        The cache stores float32, which is what a real teacher computes: cached and uncached scores are equal."""
        pairs = list(pairs)
        if self.cache is not None:
            before, t_before = self.cache.encoded, self.cache.seconds
            out = self.cache.get_or_score(pairs, self._call, show_progress_bar=self.show_progress_bar,
                                          collective=collective)
            new = self.cache.encoded - before
            self.scored += new
            self.from_cache += len(pairs) - new
            self.seconds += self.cache.seconds - t_before
            return out
        if collective and rank_world()[1] > 1:  # never reached through the miner: it asks for --cache-dir first
            raise RuntimeError("sharded teacher scoring needs a score cache every rank can see")
        unique = list(dict.fromkeys(pairs))
        row = {p: i for i, p in enumerate(unique)}
        got = np.empty(len(unique), dtype=np.float64)  # as the teacher returns them (a real one: float32 values)
        show = self.show_progress_bar if self.show_progress_bar is not None else len(unique) > 1000
        with tqdm(total=len(unique), desc="teacher", unit="pair", disable=not show) as bar:
            for start in range(0, len(unique), self.shard_size):
                chunk = unique[start:start + self.shard_size]
                t0 = time.perf_counter()
                got[start:start + len(chunk)] = np.asarray(self._call(chunk), dtype=np.float64).reshape(-1)
                self.seconds += time.perf_counter() - t0
                bar.update(len(chunk))
        self.scored += len(unique)
        return got[[row[p] for p in pairs]] if pairs else got

    @property
    def pairs_per_second(self) -> float:
        """Teacher throughput of this process (0 when it scored nothing)."""
        return self.scored / self.seconds if self.seconds > 0 else 0.0
