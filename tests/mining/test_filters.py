"""Positive-aware filters, window and sampling -- with hand-chosen scores so every expected value is computed here."""

from __future__ import annotations

import numpy as np
import pytest

from embedkit.data.schema import Pair
from embedkit.errors import ConfigError
from embedkit.mining import mine_hard_negatives, normalize_text, select_negatives
from embedkit.mining.filters import score_threshold

Q = "how do I list files"
POS = "ls lists the contents of a directory"


def _mine(tiny_st, table_encoder, scores: dict[str, float], pairs: list[Pair], **kw):
    enc = table_encoder(scores, {p.query for p in pairs})
    corpus = [t for t in scores if t not in {d for p in pairs for d in p.positives}]
    result = mine_hard_negatives(pairs, tiny_st, corpus=corpus, encode_fn=enc, show_progress_bar=False, **kw)
    return result, enc


def test_planted_duplicate_and_near_positive_are_removed(tiny_st, table_encoder) -> None:
    scores = {
        POS: 0.80,
        "  LS lists the CONTENTS of a\tdirectory ": 0.50,  # same text after casefold/whitespace: a duplicate
        "ls shows what is in a folder": 0.78,  # a near-positive: above 0.95 * 0.80 = 0.76
        "cp copies files": 0.75,
        "mv moves files": 0.70,
        "rm removes files": 0.60,
        "du shows disk usage": 0.40,
    }
    result, _ = _mine(tiny_st, table_encoder, scores, [Pair(query=Q, positives=[POS])], num_negatives=3)
    assert result.pairs[0].negatives == ["cp copies files", "mv moves files", "rm removes files"]
    assert dict(result.stats.removed) == {"positive": 1, "duplicate of a positive": 1, "max_score_ratio": 1}
    assert result.stats.short_queries == 0
    # without the filters both planted texts come back (so the test above can fail)
    loose, _ = _mine(tiny_st, table_encoder, scores, [Pair(query=Q, positives=[POS])], num_negatives=3,
                     max_score_ratio=None, drop_duplicates=False)
    assert loose.pairs[0].negatives == ["ls shows what is in a folder", "cp copies files", "mv moves files"]
    assert "  LS lists the CONTENTS of a\tdirectory " in _mine(
        tiny_st, table_encoder, scores, [Pair(query=Q, positives=[POS])], num_negatives=6, max_score_ratio=None,
        drop_duplicates=False)[0].pairs[0].negatives


def test_multi_positive_query_uses_the_minimum_positive_score(tiny_st, table_encoder) -> None:
    scores = {"strong positive": 0.90, "weak positive": 0.60, "candidate at 0.70": 0.70,
              "candidate at 0.58": 0.58, "candidate at 0.50": 0.50, "candidate at 0.30": 0.30}
    pair = Pair(query=Q, positives=["strong positive", "weak positive"])
    result, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=2)
    # threshold = 0.95 * min(0.90, 0.60) = 0.57: 0.70 and 0.58 go; with the max positive (0.855) they would stay
    assert result.pairs[0].negatives == ["candidate at 0.50", "candidate at 0.30"]
    assert result.stats.removed["max_score_ratio"] == 2
    assert result.stats.removed["positive"] == 2


def test_records_sharing_a_query_exclude_each_others_positives(tiny_st, table_encoder) -> None:
    scores = {"doc A": 0.9, "doc B": 0.85, "other 1": 0.5, "other 2": 0.4}
    pairs = [Pair(query=Q, positives=["doc A"], id="1"), Pair(query=Q, positives=["doc B"], id="2")]
    result, _ = _mine(tiny_st, table_encoder, scores, pairs, num_negatives=2, max_score_ratio=None)
    assert [p.negatives for p in result.pairs] == [["other 1", "other 2"]] * 2


def test_window_is_respected_and_random_sampling_stays_inside(tiny_st, table_encoder) -> None:
    docs = {f"doc {i}": 0.9 - 0.05 * i for i in range(12)}  # doc 0 best ... doc 11 worst
    scores = {POS: 0.95, **docs}
    pair = Pair(query=Q, positives=[POS])
    top, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=3, range_min=2, range_max=5,
                   max_score_ratio=None)
    assert top.pairs[0].negatives == ["doc 2", "doc 3", "doc 4"]
    # only range_max + 1 candidates are retrieved: "doc 0" and "doc 1" (ranks 0, 1) fall outside the window
    assert top.stats.removed["outside window"] == 2 and top.stats.candidates == 6
    seen = set()
    for seed in range(8):
        rnd, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=2, range_min=2, range_max=7,
                       max_score_ratio=None, sampling="random", seed=seed)
        negs = rnd.pairs[0].negatives
        assert len(negs) == 2 and set(negs) <= {f"doc {i}" for i in range(2, 7)}
        assert negs == sorted(negs, key=lambda t: -docs[t])  # best first
        seen.update(negs)
    assert len(seen) > 2  # it does sample
    again, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=2, range_min=2, range_max=7,
                     max_score_ratio=None, sampling="random", seed=3)
    first, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=2, range_min=2, range_max=7,
                     max_score_ratio=None, sampling="random", seed=3)
    assert again.pairs[0].negatives == first.pairs[0].negatives


def test_absolute_margin_and_short_queries_are_reported(tiny_st, table_encoder) -> None:
    scores = {POS: 0.80, "c 0.75": 0.75, "c 0.69": 0.69, "c 0.30": 0.30}
    result, _ = _mine(tiny_st, table_encoder, scores, [Pair(query=Q, positives=[POS])], num_negatives=3,
                      max_score_ratio=None, max_score_margin=0.1)
    assert result.pairs[0].negatives == ["c 0.69", "c 0.30"]  # 0.75 > 0.80 - 0.1
    assert result.stats.removed["max_score_margin"] == 1
    assert result.stats.short_queries == 1 and result.stats.empty_queries == 0
    assert "queries with fewer than 3 negatives: 1" in result.stats.summary()
    dropped, _ = _mine(tiny_st, table_encoder, scores, [Pair(query=Q, positives=[POS])], num_negatives=3,
                       max_score_ratio=None, max_score_margin=0.1, drop_incomplete=True)
    assert dropped.pairs == [] and dropped.stats.dropped_incomplete == 1


def test_select_negatives_by_hand() -> None:
    ids = np.array([[4, 0, 1, 2, 3, -1], [1, 2, 3, 0, 4, 5]])
    scores = np.array([[0.9, 0.85, 0.8, 0.5, 0.4, -np.inf], [0.99, 0.7, 0.6, 0.5, 0.45, 0.2]], dtype=np.float32)
    norm = np.array([0, 1, 2, 3, 4, 1])  # doc 5 duplicates doc 1's text
    sel = select_negatives(ids, scores, positives=[{4}, {1, 0}], min_pos=np.array([0.9, 0.5]), norm_keys=norm,
                           num_negatives=2, range_min=0, range_max=4, max_score_ratio=0.95)
    # q0: drop 4 (positive); window ranks 0..3 = 0,1,2,3; threshold 0.855: 0 (0.85) stays -> 0, 1
    # q1: drop 1, 0 (positives); window = 2,3,4,5; 5 duplicates doc 1; threshold 0.475: 2, 3 removed -> [4]
    assert sel.negatives == [[0, 1], [4]]
    assert sel.scores[0] == pytest.approx([0.85, 0.8])
    assert dict(sel.removed) == {"positive": 3, "duplicate of a positive": 1, "max_score_ratio": 2}
    assert sel.candidates == 11


def test_threshold_for_negative_positive_scores_is_below_the_positive() -> None:
    thr = score_threshold(np.array([0.8, -0.2]), 0.95, None)
    assert thr == pytest.approx([0.76, -0.21])  # never above the positive, whatever its sign
    assert score_threshold(np.array([0.8]), 0.95, 0.1) == pytest.approx([0.7])


def test_normalize_text() -> None:
    assert normalize_text("  Foo\tBAR \n baz ") == "foo bar baz"
    assert normalize_text("Straße") == normalize_text("STRASSE")


@pytest.mark.parametrize(("kw", "where"), [({"range_min": 5, "range_max": 5}, "mining"),
                                           ({"num_negatives": 0}, "mining.num_negatives"),
                                           ({"max_score_ratio": 1.5}, "mining.max_score_ratio"),
                                           ({"sampling": "best"}, "mining.sampling"),
                                           ({"num_negatives": 10, "range_max": 5}, "mining")])
def test_bad_settings_are_config_errors(kw, where) -> None:
    from embedkit.mining.config import make_config

    with pytest.raises(ConfigError) as err:
        make_config(**kw)
    assert str(err.value).startswith(f"{where}: ") and "\n" not in str(err.value)


#: (positive, candidate, same text?) -- pairs where a duplicate filter could go either way
TRICKY_PAIRS = [
    ("\uff2c\uff33 lists files", "ls lists files", True),            # full-width letters (NFKC)
    ("\ufb01nd searches a tree", "find searches a tree", True),       # the "fi" ligature (NFKC)
    ("cafe\u0301 menu tool", "caf\u00e9 menu tool", True),             # combining accent vs precomposed
    ("x\u00b2 units", "x2 units", True),                              # superscript two (NFKC)
    ("Stra\u00dfe map", "STRASSE MAP", True),                         # full case folding
    ("  gzip\u00a0compresses\tfiles\n", "gzip compresses files", True),  # no-break space, tabs, ends
    ("rsync syncs\u200b trees", "rsync syncs trees", True),           # zero-width space (invisible format char)
    ("\ufeffdu shows usage", "du shows usage", True),                 # byte-order mark left at a line start
    ("co\u00adoperative tar", "cooperative tar", True),               # soft hyphen
    ("ps -e lists processes", "ps \u2013e lists processes", False),   # hyphen vs en dash: punctuation is kept
    ("kill stops jobs.", "kill stops jobs", False),                   # a full stop is text
    ("cp copies", "cp moves", False),
]


def test_miner_and_loss_judge_the_same_pairs_duplicates(tiny_st, table_encoder) -> None:
    """One normalisation: the miner's duplicate filter drops a candidate exactly when the loss's duplicate mask
    (text hashes, :func:`embedkit.losses.base.hash_texts`) would mask it -- and both match the expected verdict."""
    import torch

    from embedkit.losses import FalseNegativeMasking, hash_texts

    pairs = [Pair(query=f"query {i}", positives=[pos]) for i, (pos, _, _) in enumerate(TRICKY_PAIRS)]
    scores = {pos: 0.9 for pos, _, _ in TRICKY_PAIRS} | {cand: 0.5 for _, cand, _ in TRICKY_PAIRS}
    result, _ = _mine(tiny_st, table_encoder, scores, pairs, num_negatives=len(scores), range_max=len(scores),
                      max_score_ratio=None)
    masking = FalseNegativeMasking(margin=None, mask_duplicates=True)
    for i, (pos, cand, same) in enumerate(TRICKY_PAIRS):
        miner_dup = cand not in result.pairs[i].negatives
        h = hash_texts([pos, cand])
        loss_dup = bool(masking.find(torch.tensor([[0.9, 0.5]]), torch.tensor([0]), col_hash=h,
                                     pos_hash=h[:1])[0, 1])
        assert (miner_dup, loss_dup) == (same, same), (pos, cand)
        assert (normalize_text(pos) == normalize_text(cand)) is same


# ------------------------------------------------------------------------------------- teacher false-negative filter


class TableTeacher:
    """A hand-made teacher: ``score_lists`` looks each (query, document) up in a table, and counts what it scored."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.scored: list[str] = []

    def score_lists(self, queries, docs):
        self.scored.extend(d for ds in docs for d in ds)
        return [[self.table[d] for d in ds] for ds in docs]


def test_filter_by_teacher_by_hand() -> None:
    from embedkit.mining.filters import filter_by_teacher

    # query 0: positive 0 (teacher 0.9, threshold 0.9 x 0.9 = 0.81); candidates 1..5 best first
    # query 1: positives 6, 7 (lowest teacher score 0.5 -> threshold 0.45); candidates 8, 9
    table = {(0, 0): 0.9, (0, 1): 0.95, (0, 2): 0.3, (0, 3): 0.85, (0, 4): 0.2, (0, 5): 0.1,
             (1, 6): 0.8, (1, 7): 0.5, (1, 8): 0.6, (1, 9): 0.4}
    calls: list[list[tuple[int, int]]] = []

    def score_fn(pairs):
        calls.append(list(pairs))
        return [table[p] for p in pairs]

    sel = filter_by_teacher([[1, 2, 3, 4, 5], [8, 9]], positives=[{0}, {6, 7}], score_fn=score_fn,
                            num_negatives=2, max_score_ratio=0.9)
    # q0: 1 (0.95) and 3 (0.85) are above 0.81 -> 2, 4; q1: 8 (0.6 > 0.45) dropped -> 9 only (short)
    assert sel.negatives == [[2, 4], [9]] and sel.removed == 3
    # scored lazily, batched per round: positives + 2 first candidates, then the replacements; 5 never scored
    assert calls == [[(0, 0), (1, 6), (1, 7), (0, 1), (0, 2), (1, 8), (1, 9)], [(0, 3)], [(0, 4)]]
    assert (0, 5) not in sel.scores and sel.scores[(0, 2)] == 0.3
    # random sampling walks a seeded permutation and returns the picks best first, never a dropped candidate
    for seed in range(5):
        rnd = filter_by_teacher([[1, 2, 3, 4, 5]], positives=[{0}], score_fn=lambda ps: [table[p] for p in ps],
                                num_negatives=2, max_score_ratio=0.9, sampling="random", seed=seed)
        assert len(rnd.negatives[0]) == 2 and set(rnd.negatives[0]) <= {2, 4, 5}
        assert rnd.negatives[0] == sorted(rnd.negatives[0])


def test_miner_drops_the_planted_teacher_false_negative(tiny_st, table_encoder, monkeypatch) -> None:
    from embedkit.mining import teacher as teacher_mod

    scores = {POS: 0.80, "ls -l shows the files of a folder": 0.70,  # a false negative only the teacher sees
              "cp copies files": 0.65, "mv moves files": 0.60, "rm removes files": 0.50, "du shows disk usage": 0.40}
    teacher = TableTeacher({POS: 0.9, "ls -l shows the files of a folder": 0.88, "cp copies files": 0.2,
                            "mv moves files": 0.1, "rm removes files": 0.3, "du shows disk usage": 0.05})
    monkeypatch.setattr(teacher_mod.Teacher, "load", classmethod(lambda cls, *a, **k: teacher))
    pair = Pair(query=Q, positives=[POS])
    result, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=3, teacher="hand-made",
                      teacher_max_score_ratio=0.9)
    p = result.pairs[0]
    assert p.negatives == ["cp copies files", "mv moves files", "rm removes files"]
    assert result.stats.removed["teacher_max_score_ratio"] == 1
    assert "removed (teacher_max_score_ratio): 1" in result.stats.summary()
    # the scores taken while filtering are the ones stored, and nothing is scored twice
    assert p.positive_scores == [0.9] and p.negative_scores == [0.2, 0.1, 0.3]
    assert sorted(teacher.scored) == sorted(set(teacher.scored)) and "du shows disk usage" not in teacher.scored
    # without the filter the planted false negative is mined (so the test above can fail)
    teacher.scored.clear()
    loose, _ = _mine(tiny_st, table_encoder, scores, [pair], num_negatives=3, teacher="hand-made")
    assert loose.pairs[0].negatives[0] == "ls -l shows the files of a folder"
    assert loose.pairs[0].negative_scores == [0.88, 0.2, 0.1]
    assert "teacher_max_score_ratio" not in loose.stats.removed


def test_teacher_filter_without_a_teacher_is_a_config_error(tiny_st, table_encoder) -> None:
    with pytest.raises(ConfigError, match=r"^mining\.teacher_max_score_ratio: .*no teacher is given"):
        _mine(tiny_st, table_encoder, {POS: 0.8, "x": 0.1}, [Pair(query=Q, positives=[POS])], num_negatives=1,
              teacher_max_score_ratio=0.9)
    with pytest.raises(ConfigError, match=r"teacher_max_score_ratio.*must be <= 1"):
        _mine(tiny_st, table_encoder, {POS: 0.8, "x": 0.1}, [Pair(query=Q, positives=[POS])], num_negatives=1,
              teacher_max_score_ratio=1.5)


def test_teacher_filter_through_a_real_teacher_folder(tiny_bert, tiny_st, debian_pairs) -> None:
    """End to end through Teacher.load: a bi-encoder teacher that is the mining model itself filters exactly like
    TopK-PercPos on the retrieval scores, and the stored scores are the teacher's."""
    pairs = debian_pairs[:12]
    ratio = 0.9
    result = mine_hard_negatives(pairs, tiny_st, num_negatives=3, max_score_ratio=None, teacher=tiny_bert,
                                 teacher_type="bi", teacher_max_score_ratio=ratio, show_progress_bar=False)
    same = mine_hard_negatives(pairs, tiny_st, num_negatives=3, max_score_ratio=ratio, show_progress_bar=False)
    dropped = result.stats.removed["teacher_max_score_ratio"]
    assert dropped > 0 and dropped <= same.stats.removed["max_score_ratio"]  # scored lazily: not the whole window
    assert [p.negatives for p in result.pairs] == [p.negatives for p in same.pairs]
    q = tiny_st.encode([p.query for p in result.pairs], normalize_embeddings=True)
    for i, p in enumerate(result.pairs):
        assert len(p.negative_scores or []) == len(p.negatives)
        thr = float(score_threshold(np.array([min(p.positive_scores)]), ratio, None)[0])
        assert all(s <= thr + 1e-6 for s in p.negative_scores or [])
        d = tiny_st.encode([*p.positives, *p.negatives], normalize_embeddings=True)
        np.testing.assert_allclose([*p.positive_scores, *(p.negative_scores or [])], d @ q[i], atol=1e-4)
