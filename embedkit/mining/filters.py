"""Positive-aware selection of hard negatives from retrieval candidates (pure numpy, no model).

For each query, in this order (each candidate is counted by the first rule that removes it):

1. ``positive``: the query's own positives (all records sharing the query text) never become negatives;
2. ``outside window``: keep ranks ``range_min <= r < range_max``, ranks counted after removing the positives;
3. ``duplicate of a positive``: normalised text equal to a positive's (:func:`embedkit.data.normalize.normalize_text`,
   the key the loss's duplicate mask hashes too: NFKC, case-folded, invisible format characters dropped,
   whitespace collapsed);
4. ``max_score_ratio``: score ``> min_pos - (1 - ratio) * |min_pos|`` (NV-Retriever TopK-PercPos; with several
   positives ``min_pos`` is the *lowest* positive score, the safe side);
5. ``max_score_margin``: score ``> min_pos - margin`` (TopK-MarginPos);

then ``top`` keeps the best ``num_negatives`` survivors and ``random`` samples them (seeded) among all survivors.

With a teacher, :func:`filter_by_teacher` adds a last rule on the survivors:

6. ``teacher_max_score_ratio``: teacher score ``> tmin_pos - (1 - ratio) * |tmin_pos|``, ``tmin_pos`` the
   teacher's lowest score of the query's positives -- the TopK-PercPos rule on the teacher's judgement, which
   catches unlabelled positives the retriever cannot tell apart. Candidates are scored lazily, in the order the
   selection would take them, so the teacher scores about ``num_negatives`` (plus those it drops) per query
   rather than the whole window.

Example:
    >>> import numpy as np
    >>> from embedkit.mining.filters import select_negatives
    >>> ids = np.array([[0, 1, 2, 3]]); scores = np.array([[0.9, 0.88, 0.5, 0.4]], dtype=np.float32)
    >>> sel = select_negatives(ids, scores, positives=[{0}], min_pos=np.array([0.9]), norm_keys=np.arange(4),
    ...                        num_negatives=2, range_max=3, max_score_ratio=0.95)
    >>> sel.negatives[0], dict(sel.removed)
    ([2, 3], {'positive': 1, 'max_score_ratio': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from embedkit.data.normalize import normalize_text

__all__ = ["Selection", "TeacherSelection", "filter_by_teacher", "normalize_text", "select_negatives"]

#: ``score_fn([(query index, corpus id), ...])`` -> the teacher's score of each pair, in order
ScoreFn = Callable[[list[tuple[int, int]]], Sequence[float]]

@dataclass
class Selection:
    """Chosen negatives per query (corpus ids, best first) and their retrieval scores."""

    negatives: list[list[int]]
    scores: list[list[float]]
    removed: Counter[str] = field(default_factory=Counter)
    candidates: int = 0


def score_threshold(min_pos: np.ndarray, ratio: float | None, margin: float | None) -> np.ndarray:
    """Highest allowed negative score per query (``+inf`` when no rule is set)."""
    thr = np.full(min_pos.shape, np.inf, dtype=np.float64)
    if ratio is not None:
        thr = np.minimum(thr, min_pos - (1.0 - ratio) * np.abs(min_pos))
    if margin is not None:
        thr = np.minimum(thr, min_pos - margin)
    return thr


def select_negatives(
    ids: np.ndarray,
    scores: np.ndarray,
    *,
    positives: Sequence[set[int]],
    min_pos: np.ndarray,
    norm_keys: np.ndarray,
    num_negatives: int,
    range_min: int = 0,
    range_max: int = 50,
    max_score_ratio: float | None = 0.95,
    max_score_margin: float | None = None,
    drop_duplicates: bool = True,
    sampling: Literal["top", "random"] = "top",
    seed: int = 0,
) -> Selection:
    """Apply the rules above to ``(ids, scores)`` of shape ``(queries, k)`` sorted best first.

    Args:
        positives: per query, the corpus ids of its positives.
        min_pos: per query, the lowest positive score.
        norm_keys: per corpus id, an integer key of its normalised text (equal keys = duplicate texts).
    """
    n_q = ids.shape[0]
    rng = np.random.default_rng(seed)
    ratio_thr = score_threshold(min_pos, max_score_ratio, None)
    margin_thr = score_threshold(min_pos, None, max_score_margin)
    removed: Counter[str] = Counter()
    out_ids: list[list[int]] = []
    out_scores: list[list[float]] = []
    for q in range(n_q):
        row_ids = ids[q]
        row_scores = scores[q]
        valid = row_ids >= 0
        pos = np.fromiter(positives[q], dtype=np.int64, count=len(positives[q]))
        is_pos = np.isin(row_ids, pos) & valid
        removed["positive"] += int(is_pos.sum())
        keep = valid & ~is_pos
        rank = np.cumsum(keep) - 1
        in_window = keep & (rank >= range_min) & (rank < range_max)
        removed["outside window"] += int((keep & ~in_window).sum())
        keep = in_window
        if drop_duplicates and len(pos):
            dup = keep & np.isin(norm_keys[np.where(valid, row_ids, 0)], norm_keys[pos])
            removed["duplicate of a positive"] += int(dup.sum())
            keep &= ~dup
        if max_score_ratio is not None:
            high = keep & (row_scores > ratio_thr[q])
            removed["max_score_ratio"] += int(high.sum())
            keep &= ~high
        if max_score_margin is not None:
            high = keep & (row_scores > margin_thr[q])
            removed["max_score_margin"] += int(high.sum())
            keep &= ~high
        cand = np.flatnonzero(keep)
        if sampling == "random" and len(cand) > num_negatives:
            cand = np.sort(rng.choice(cand, num_negatives, replace=False))
        else:
            cand = cand[:num_negatives]
        out_ids.append(row_ids[cand].tolist())
        out_scores.append(row_scores[cand].astype(float).tolist())
    removed = Counter({k: v for k, v in removed.items() if v})
    return Selection(negatives=out_ids, scores=out_scores, removed=removed, candidates=int((ids >= 0).sum()))


@dataclass
class TeacherSelection:
    """Negatives that pass the teacher filter (corpus ids, best retrieval rank first) and every teacher score taken.

    Attributes:
        negatives: per query, up to ``num_negatives`` corpus ids.
        scores: ``{(query index, corpus id): teacher score}`` for every positive and every candidate scored
            (the miner stores them as ``positive_scores`` / ``negative_scores`` without scoring again).
        removed: candidates the rule dropped.
    """

    negatives: list[list[int]]
    scores: dict[tuple[int, int], float]
    removed: int = 0


def filter_by_teacher(
    ranked: Sequence[Sequence[int]],
    *,
    positives: Sequence[set[int]],
    score_fn: ScoreFn,
    num_negatives: int,
    max_score_ratio: float,
    sampling: Literal["top", "random"] = "top",
    seed: int = 0,
) -> TeacherSelection:
    """Rule 6 above: pick ``num_negatives`` per query from ``ranked`` (each query's survivors of rules 1-5, best
    retrieval rank first), skipping candidates the teacher scores above ``max_score_ratio`` of its lowest positive.

    ``top`` walks each list in rank order; ``random`` walks a seeded permutation of it (a uniform sample of the
    candidates that pass) and returns the picks in rank order. ``score_fn`` is called once per round with the pairs
    still needed, batched over all queries: the positives and the first ``num_negatives`` candidates, then as many
    further candidates as each query is still short.

    Example:
        >>> table = {(0, 0): 0.9, (0, 1): 0.88, (0, 2): 0.2, (0, 3): 0.1}
        >>> sel = filter_by_teacher([[1, 2, 3]], positives=[{0}], score_fn=lambda pairs: [table[p] for p in pairs],
        ...                         num_negatives=2, max_score_ratio=0.9)
        >>> sel.negatives, sel.removed
        ([[2, 3]], 1)
    """
    rng = np.random.default_rng(seed)
    orders: list[list[int]] = []
    for row in ranked:
        pos = list(range(len(row)))
        orders.append([pos[i] for i in rng.permutation(len(pos))] if sampling == "random" else pos)
    scores: dict[tuple[int, int], float] = {}

    def take(pairs: list[tuple[int, int]]) -> None:
        new = list(dict.fromkeys(p for p in pairs if p not in scores))
        if new:
            got = list(score_fn(new))
            if len(got) != len(new):
                raise ValueError(f"score_fn returned {len(got)} scores for {len(new)} pairs")
            scores.update(zip(new, (float(x) for x in got)))

    first = [(q, d) for q, pos in enumerate(positives) for d in sorted(pos)]
    take(first + [(q, ranked[q][i]) for q in range(len(ranked)) for i in orders[q][:num_negatives]])
    tmin = np.array([min((scores[(q, d)] for d in pos), default=np.inf) for q, pos in enumerate(positives)])
    thr = score_threshold(tmin, max_score_ratio, None)
    chosen: list[list[int]] = [[] for _ in ranked]
    next_i = [0] * len(ranked)
    removed = 0
    while True:
        wanted = []
        for q in range(len(ranked)):
            short = num_negatives - len(chosen[q])
            wanted.extend((q, i) for i in orders[q][next_i[q]:next_i[q] + short])
            next_i[q] += max(short, 0)
        if not wanted:
            break
        take([(q, ranked[q][i]) for q, i in wanted])
        for q, i in wanted:
            if scores[(q, ranked[q][i])] > thr[q]:
                removed += 1
            else:
                chosen[q].append(i)
    return TeacherSelection(negatives=[[ranked[q][i] for i in sorted(c)] for q, c in enumerate(chosen)],
                            scores=scores, removed=removed)
