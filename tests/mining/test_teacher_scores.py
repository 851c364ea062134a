"""Teacher scoring at scale (``embedkit mine --teacher CE --num-candidates N``): the candidate list, the on-disk
score cache (keyed by teacher weights, query, document), resumption, throughput figure and torchrun sharding."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from embedkit.cli import main
from embedkit.data.readers import load_pairs, write_pairs
from embedkit.errors import ConfigError
from embedkit.mining import mine_hard_negatives
from embedkit.mining.scores import ScoreCache, TeacherScorer, pair_digests
from embedkit.mining.teacher import Teacher


def _save_cross_encoder(tiny_bert: str, out: Path, seed: int = 0) -> str:
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(seed)
    CrossEncoder(tiny_bert, num_labels=1).save(str(out))
    return str(out)


@pytest.fixture(scope="module")
def cross_encoder(tiny_bert: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _save_cross_encoder(tiny_bert, tmp_path_factory.mktemp("ce") / "ce")


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pairs per teacher call (every call the miner makes to the real teacher's ``score_pairs``)."""
    calls: list[int] = []
    original = Teacher.score_pairs

    def spy(self, pairs, **kw):
        calls.append(len(pairs))
        return original(self, pairs, **kw)

    monkeypatch.setattr(Teacher, "score_pairs", spy)
    return calls


def _mine(pairs, model, teacher, cache, **kw):
    kw.setdefault("num_negatives", 3)
    kw.setdefault("max_score_ratio", None)
    return mine_hard_negatives(pairs, model, teacher=teacher, cache_dir=cache, show_progress_bar=False, **kw)


def test_candidates_follow_the_negatives_and_carry_the_teachers_scores(tiny_bert, tiny_st, cross_encoder,
                                                                       debian_pairs, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    pairs = debian_pairs[:20]
    plain = _mine(pairs, tiny_bert, None, tmp_path / "c", max_score_ratio=0.95)
    got = _mine(pairs, tiny_bert, cross_encoder, tmp_path / "c", num_candidates=8, max_score_ratio=0.95)
    ce = CrossEncoder(cross_encoder, local_files_only=True)
    corpus = got.corpus
    d_emb = tiny_st.encode(corpus, normalize_embeddings=True)
    added = 0
    for a, b in zip(plain.pairs, got.pairs):
        assert b.negatives[:len(a.negatives)] == a.negatives  # the mined negatives first, exactly as without
        extra = b.negatives[len(a.negatives):]
        # the rest: the top-8 retrieval ranks (positives removed, no score filter) not already negatives, best first
        q = tiny_st.encode([b.query], normalize_embeddings=True)[0]
        ranked = [corpus[i] for i in np.argsort(-(d_emb @ q), kind="stable") if corpus[i] not in b.positives][:8]
        assert extra == [t for t in ranked if t not in a.negatives]
        assert set(ranked) <= set(b.negatives)
        added += len(extra)
        expected = ce.predict([(b.query, d) for d in [*b.positives, *b.negatives]])
        np.testing.assert_allclose([*b.positive_scores, *b.negative_scores], expected, atol=1e-6)
    assert added > 0 and got.stats.candidates_added == added
    assert f"candidates appended to the negatives (top 8, teacher-scored): {added}" in got.stats.summary()


def test_cached_scores_equal_uncached_and_a_second_run_scores_nothing(tiny_bert, cross_encoder, debian_pairs,
                                                                      tmp_path: Path, counted: list[int]) -> None:
    pairs = debian_pairs[:20]
    uncached = _mine(pairs, tiny_bert, cross_encoder, None, num_candidates=6)
    assert sum(counted) == uncached.stats.teacher_scored > 0
    counted.clear()
    first = _mine(pairs, tiny_bert, cross_encoder, tmp_path / "cache", num_candidates=6)
    n = first.stats.teacher_scored
    assert sum(counted) == n == uncached.stats.teacher_scored and first.stats.teacher_from_cache == 0
    for a, b in zip(uncached.pairs, first.pairs):
        assert a.negatives == b.negatives
        assert a.positive_scores == b.positive_scores and a.negative_scores == b.negative_scores  # bit-identical
    assert (tmp_path / "cache" / "scores").is_dir()
    counted.clear()
    second = _mine(pairs, tiny_bert, cross_encoder, tmp_path / "cache", num_candidates=6)
    assert counted == [] and second.stats.teacher_scored == 0 and second.stats.teacher_from_cache == n
    assert [p.negative_scores for p in second.pairs] == [p.negative_scores for p in first.pairs]
    summary = second.stats.summary()
    assert f"teacher pairs scored: 0 (0.0 pairs/s), read from the score cache: {n}" in summary
    assert "pairs/s" in first.stats.summary() and first.stats.pairs_per_second > 0


def test_a_changed_teacher_never_reuses_scores(tiny_bert, debian_pairs, tmp_path: Path, counted: list[int]) -> None:
    from safetensors.torch import load_file, save_file

    ce = _save_cross_encoder(tiny_bert, tmp_path / "ce")
    pairs = debian_pairs[:12]
    first = _mine(pairs, tiny_bert, ce, tmp_path / "cache", num_candidates=4)
    n = first.stats.teacher_scored
    # fine-tune stand-in: change one weight in place (same file name)
    weights = next(Path(ce).rglob("*.safetensors"))
    state = load_file(weights)
    name = next(k for k in state if k.endswith("classifier.weight"))
    state[name] = state[name] + 0.5
    time.sleep(0.01)  # a distinct mtime even on coarse clocks
    save_file(state, weights, metadata={"format": "pt"})
    counted.clear()
    second = _mine(pairs, tiny_bert, ce, tmp_path / "cache", num_candidates=4)
    assert second.stats.teacher_scored == n == sum(counted) and second.stats.teacher_from_cache == 0
    assert [p.negatives for p in first.pairs] == [p.negatives for p in second.pairs]
    assert [p.negative_scores for p in first.pairs] != [p.negative_scores for p in second.pairs]
    assert len([d for d in (tmp_path / "cache" / "scores").iterdir() if d.is_dir()]) == 2


def test_an_interrupted_run_resumes_from_the_finished_shards(tiny_bert, cross_encoder, debian_pairs,
                                                             tmp_path: Path, monkeypatch) -> None:
    pairs = debian_pairs[:20]
    reference = _mine(pairs, tiny_bert, cross_encoder, None, num_candidates=5, shard_size=8)
    total = reference.stats.teacher_scored
    assert total > 3 * 8
    original = Teacher.score_pairs
    calls = []

    def dies_after_two(self, chunk, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt  # what Ctrl-C raises
        calls.append(len(chunk))
        return original(self, chunk, **kw)

    monkeypatch.setattr(Teacher, "score_pairs", dies_after_two)
    out = tmp_path / "mined.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _mine(pairs, tiny_bert, cross_encoder, tmp_path / "cache", num_candidates=5, shard_size=8, output=out)
    assert calls == [8, 8] and not out.exists()
    monkeypatch.setattr(Teacher, "score_pairs", original)
    resumed = _mine(pairs, tiny_bert, cross_encoder, tmp_path / "cache", num_candidates=5, shard_size=8, output=out)
    assert resumed.stats.teacher_scored == total - 16 and resumed.stats.teacher_from_cache == 16
    assert [p.negative_scores for p in load_pairs(out)] == [p.negative_scores for p in reference.pairs]


def test_score_cache_keys_by_teacher_query_and_document(tmp_path: Path) -> None:
    calls: list[list[tuple[str, str]]] = []

    def fake(pairs):
        calls.append(list(pairs))
        return np.array([len(q) + 10 * len(d) for q, d in pairs], dtype=np.float32)

    a = ScoreCache(tmp_path, {"model": "teacher-a"}, shard_size=2)
    got = a.get_or_score([("q", "dd"), ("qq", "d"), ("q", "dd")], fake)
    assert got.tolist() == [21.0, 12.0, 21.0] and calls == [[("q", "dd"), ("qq", "d")]]
    # same texts, other split between query and document: another key
    assert pair_digests([("ab", "c")]).tobytes() != pair_digests([("a", "bc")]).tobytes()
    assert a.get_or_score([("qq", "d"), ("q", "d")], fake).tolist() == [12.0, 11.0] and calls[-1] == [("q", "d")]
    b = ScoreCache(tmp_path, {"model": "teacher-b"}, shard_size=2)  # another teacher reuses nothing
    b.get_or_score([("q", "dd")], fake)
    assert calls[-1] == [("q", "dd")] and a.root != b.root and a.root.parent == tmp_path / "scores"


def test_the_progress_bar_counts_pairs_and_can_be_turned_off(tmp_path: Path, capsys) -> None:
    def fake(pairs):
        return np.zeros(len(pairs), dtype=np.float32)

    pairs = [("q", f"d{i}") for i in range(6)]
    ScoreCache(tmp_path / "on", {"model": "x"}, shard_size=2).get_or_score(pairs, fake, show_progress_bar=True)
    err = capsys.readouterr().err
    assert "teacher: 100%" in err and "6/6" in err and "pair/s" in err
    ScoreCache(tmp_path / "off", {"model": "x"}, shard_size=2).get_or_score(pairs, fake, show_progress_bar=False)
    assert "teacher" not in capsys.readouterr().err


def test_teacher_scorer_counts_and_dedupes_without_a_cache(cross_encoder) -> None:
    teacher = Teacher.load(cross_encoder, "cross", batch_size=4)
    scorer = TeacherScorer(teacher, None, shard_size=3, show_progress_bar=False)
    pairs = [("q", f"doc {i}") for i in range(7)] + [("q", "doc 0")]
    got = scorer.score(pairs)
    assert scorer.scored == 7 and got[0] == got[-1]
    np.testing.assert_array_equal(got[:7].astype(np.float32), teacher.score_pairs(pairs[:7]))


def test_teacher_settings_are_checked_before_any_work(tiny_bert, cross_encoder, debian_pairs, tmp_path: Path,
                                                      capsys, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"^mining\.num_candidates: .*no teacher is given"):
        mine_hard_negatives(debian_pairs[:4], tiny_bert, num_candidates=10, num_negatives=3)
    with pytest.raises(ConfigError, match=r"num_candidates \(2\) is smaller than num_negatives \(3\)"):
        mine_hard_negatives(debian_pairs[:4], tiny_bert, teacher=cross_encoder, num_candidates=2, num_negatives=3)
    import embedkit.data.readers as readers

    def no_read(*a, **k):
        raise AssertionError("the pairs were read before the settings were checked")

    monkeypatch.setattr(readers, "load_pairs", no_read)
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"query": "q", "positive": "d"}\n')
    rc = main(["mine", "--pairs", str(pairs), "--model", tiny_bert, "-o", str(tmp_path / "o.jsonl"),
               "--num-candidates", "20"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "--num-candidates: num_candidates" in err and "fix:" in err


def test_cli_reports_throughput_and_honours_no_progress(tiny_bert, cross_encoder, debian_pairs, tmp_path: Path,
                                                        capsys) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(debian_pairs[:10], pairs)
    rc = main(["mine", "--pairs", str(pairs), "--model", tiny_bert, "-o", str(tmp_path / "o.jsonl"),
               "--teacher", cross_encoder, "--num-candidates", "4", "--num-negatives", "2", "--no-progress",
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "teacher pairs scored: " in err and " pairs/s), read from the score cache: 0" in err
    assert "pair/s]" not in err  # no teacher bar (transformers' own "Loading weights" bars are not ours)
    mined = load_pairs(tmp_path / "o.jsonl")
    assert all(len(p.negative_scores) == len(p.negatives) >= 2 for p in mined)


@pytest.mark.slow
def test_two_rank_torchrun_scoring_equals_one_process(tiny_bert, cross_encoder, debian_pairs, mine_one_and_two,
                                                      tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(debian_pairs[:30], pairs)
    one, two = mine_one_and_two(["mine", "--pairs", str(pairs), "--model", tiny_bert, "--num-negatives", "3",
                                 "--shard-size", "16", "--teacher", cross_encoder, "--num-candidates", "6",
                                 "--no-progress"], tmp_path)
    a, b = load_pairs(tmp_path / "one.jsonl"), load_pairs(tmp_path / "two.jsonl")
    assert [p.negatives for p in a] == [p.negatives for p in b]
    assert [(p.positive_scores, p.negative_scores) for p in a] == [(p.positive_scores, p.negative_scores) for p in b]
    line = next(ln for ln in two.stderr.splitlines() if ln.startswith("teacher pairs scored:"))
    per_rank = [int(x) for x in line.split("scored per rank: ")[1].rstrip(")").split(", ")]
    total = int(line.split()[3])
    assert len(per_rank) == 2 and min(per_rank) > 0 and sum(per_rank) == total  # both ranks scored a slice
    assert f"teacher pairs scored: {total} " in one.stderr
    assert len(list((tmp_path / "c2" / "scores").rglob("shard-*.keys.npy"))) == -(-total // 16)
    assert two.stderr.count("wrote 30 records") == 1
