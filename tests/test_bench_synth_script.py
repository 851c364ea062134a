"""``eval/bench_synth.py``'s helpers: the crop + LLM union arm keeps every pair of both sets under distinct ids, and
``--reuse`` takes a synthetic set from an earlier run only when it was made with the same settings."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from embedkit.data.readers import load_pairs, write_pairs
from embedkit.data.schema import Pair
from embedkit.synth import SynthConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "eval"))  # bench_synth imports quality.py from its own folder
    try:
        spec = importlib.util.spec_from_file_location("bench_synth", REPO / "eval" / "bench_synth.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "eval"))


def _set(path: Path, method: str, n: int) -> Path:
    write_pairs([Pair(query=f"{method} q{i}", positives=[f"doc {i}"], id=f"d{i}#0", query_type=method, doc_id=f"d{i}")
                 for i in range(n)], path)
    return path


def test_union_keeps_every_pair_under_distinct_ids(bench, tmp_path):
    a, b = _set(tmp_path / "synth-0.jsonl", "crop", 5), _set(tmp_path / "synth-1.jsonl", "question", 4)
    out = bench.union([a, b], tmp_path / "u.jsonl", seed=1)
    pairs = list(load_pairs(out))  # load_pairs refuses a repeated id, so this also checks they are distinct
    assert len(pairs) == 9
    assert {p.id for p in pairs} == {f"synth-0:d{i}#0" for i in range(5)} | {f"synth-1:d{i}#0" for i in range(4)}
    assert sorted(p.query for p in pairs) == sorted([f"crop q{i}" for i in range(5)] + [f"question q{i}"
                                                                                         for i in range(4)])
    assert {p.query_type for p in pairs} == {"crop", "question"}
    # shuffled (the two sets interleave), and the same seed gives the same file
    assert [p.query_type for p in pairs] != ["crop"] * 5 + ["question"] * 4
    again = list(load_pairs(bench.union([a, b], tmp_path / "u2.jsonl", seed=1)))
    assert [p.id for p in again] == [p.id for p in pairs]


def _args(bench, tmp_path, *extra):
    return bench.parse_args(["-o", str(tmp_path), *extra])


def test_union_needs_both_sets(bench, tmp_path, capsys):
    for skip in ("--skip-crop", "--skip-llm"):
        with pytest.raises(SystemExit) as exc:
            _args(bench, tmp_path, "--union", skip)
        assert exc.value.code == 2 and "--union" in capsys.readouterr().err


def test_reuse_only_with_the_same_settings(bench, tmp_path):
    kw = {"method": "crop", "queries_per_doc": 2, "seed": 42}
    path = _set(tmp_path / "synth-0.jsonl", "crop", 3)
    args = _args(bench, tmp_path, "--steps", "20")
    assert bench.Earlier(tmp_path, args).synth("crop", path, kw) is None  # no record of an earlier run
    gen = {"summary": "3 kept", "settings": SynthConfig(**kw).model_dump(mode="json"), "queries_per_second": 1.0}
    record = {"synth": {"crop": gen}, "scores": {"crop": {"ndcg@10": 0.5}},
              "args": {k: str(v) for k, v in vars(args).items()}}
    (tmp_path / "bench_synth.json").write_text(json.dumps(record), encoding="utf-8")
    earlier = bench.Earlier(tmp_path, args)
    assert earlier.synth("crop", path, kw) == gen
    assert earlier.score("crop") == {"ndcg@10": 0.5}
    assert earlier.synth("crop", path, {**kw, "seed": 43}) is None  # other generation settings: generate again
    assert earlier.synth("another arm", path, kw) is None
    assert bench.Earlier(tmp_path, args, enabled=False).synth("crop", path, kw) is None  # no --reuse
    # another training budget: the set is reused, its score is not (train again)
    other = bench.Earlier(tmp_path, _args(bench, tmp_path, "--steps", "40"))
    assert other.synth("crop", path, kw) == gen and other.score("crop") is None
    # a skip flag is not a training setting: the scores stay valid
    assert bench.Earlier(tmp_path, _args(bench, tmp_path, "--steps", "20", "--skip-real")).score("crop") is not None
    path.unlink()
    assert earlier.synth("crop", path, kw) is None  # the pairs file is gone


def test_the_llm_arms_generate_with_the_llm_only(bench, tmp_path):
    """The product default is llm+crop; an LLM arm must not get crops too (the union arm is that)."""
    sets = bench.synthetic_sets(_args(bench, tmp_path, "--per-type", "--query-types", "question,claim"))
    assert list(sets) == [bench.CROP, "synthetic LLM, mix question+claim", "synthetic LLM, question only",
                          "synthetic LLM, claim only"]
    assert [kw["method"] for kw in sets.values()] == ["crop", "llm", "llm", "llm"]
    assert sets["synthetic LLM, mix question+claim"]["query_types"] == ["question", "claim"]
    assert list(bench.synthetic_sets(_args(bench, tmp_path, "--skip-llm"))) == [bench.CROP]
