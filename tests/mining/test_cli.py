"""``embedkit mine`` end to end: output, teacher scores, one-line errors with exit 2 and no partial output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embedkit.cli import main
from embedkit.data.readers import load_pairs, write_pairs


@pytest.fixture
def pairs_file(debian_pairs, tmp_path: Path) -> Path:
    path = tmp_path / "pairs.jsonl"
    write_pairs(debian_pairs[:30], path)
    return path


def _mine(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["mine", *argv])
    return rc, capsys.readouterr().err


def test_cli_mines_and_reports(tiny_bert, pairs_file, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out" / "mined.jsonl"
    corpus = tmp_path / "extra.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"extra document {i} about packages"}) + "\n" for i in range(10)))
    rc, err = _mine(capsys, "--pairs", str(pairs_file), "--corpus", str(corpus), "--model", tiny_bert, "-o", str(out),
                    "--num-negatives", "4", "--max-score-ratio", "none", "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0, err
    mined = load_pairs(out)
    src = load_pairs(pairs_file)
    assert [p.id for p in mined] == [p.id for p in src]
    corpus_texts = {p.positives[0] for p in src} | {f"extra document {i} about packages" for i in range(10)}
    for p in mined:
        assert len(p.negatives) == 4 and len(set(p.negatives)) == 4
        assert p.positives[0] not in p.negatives and set(p.negatives) <= corpus_texts
    assert "mined 120 negatives for 30 records" in err and "texts encoded: 70" in err
    assert f"wrote 30 records to {out}" in err
    # second run, other filters: all from the cache
    rc, err = _mine(capsys, "--pairs", str(pairs_file), "--corpus", str(corpus), "--model", tiny_bert, "-o", str(out),
                    "--num-negatives", "2", "--sampling", "random", "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0 and "texts encoded: 0, read from cache: 70" in err


def test_cli_teacher_scores_cross_and_bi(tiny_bert, tiny_st, pairs_file, tmp_path: Path, capsys) -> None:
    from sentence_transformers import CrossEncoder

    ce_dir = tmp_path / "cross"
    import torch

    torch.manual_seed(0)
    CrossEncoder(tiny_bert, num_labels=1).save(str(ce_dir))
    out = tmp_path / "cross.jsonl"
    rc, err = _mine(capsys, "--pairs", str(pairs_file), "--model", tiny_bert, "-o", str(out), "--num-negatives",
                    "3", "--max-score-ratio", "none", "--teacher", str(ce_dir), "--no-cache")
    assert rc == 0, err
    mined = load_pairs(out)
    ce = CrossEncoder(str(ce_dir), local_files_only=True)
    p = mined[0]
    assert len(p.positive_scores) == 1 and len(p.negative_scores) == 3
    expected = ce.predict([(p.query, d) for d in [*p.positives, *p.negatives]])
    np.testing.assert_allclose([*p.positive_scores, *p.negative_scores], expected, atol=1e-5)

    out_bi = tmp_path / "bi.jsonl"
    rc, err = _mine(capsys, "--pairs", str(pairs_file), "--model", tiny_bert, "-o", str(out_bi), "--num-negatives",
                    "3", "--max-score-ratio", "none", "--teacher", tiny_bert, "--teacher-type", "bi",
                    "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0, err
    p = load_pairs(out_bi)[1]
    q = tiny_st.encode([p.query], normalize_embeddings=True)
    d = tiny_st.encode([*p.positives, *p.negatives], normalize_embeddings=True)
    np.testing.assert_allclose([*p.positive_scores, *p.negative_scores], (q @ d.T)[0], atol=1e-4)
    # the bi-encoder teacher's student scores order the mined negatives (same model): best first
    assert p.negative_scores == sorted(p.negative_scores, reverse=True)


def _bad_pairs(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "q1", "positive": "d1"}\n{"query": "q2", "positives": ["d2", "d3"], '
                    '"positive_scores": [1.0]}\n{"query": "q3", "positive": "d4"}\n', encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("setup", "extra", "expected"),
    [
        ("bad_pairs", [], "bad.jsonl:2: 'positive_scores' has 1 values but there are 2 positives"),
        ("bad_corpus", ["--skip-invalid"], "corpus.jsonl:2: invalid JSON"),
        ("bad_pairs", ["--range-min", "50"], "mining: range_min (50) must be smaller than range_max (50)"),
        ("bad_pairs", ["--skip-invalid", "--model", "/no/such/model"], "model '/no/such/model' not found"),
        ("bad_pairs", ["--skip-invalid", "--teacher", "/no/such/teacher"], "--teacher: teacher '/no/such/teacher'"),
        ("missing", [], "pairs file"),
    ],
)
def test_cli_errors_are_one_line_exit_2_and_leave_no_output(tiny_bert, tmp_path: Path, capsys, setup, extra,
                                                             expected) -> None:
    pairs = _bad_pairs(tmp_path)
    args = ["--pairs", str(pairs)]
    if setup == "bad_corpus":
        (tmp_path / "corpus.jsonl").write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
        args += ["--corpus", str(tmp_path / "corpus.jsonl")]
    if setup == "missing":
        args = ["--pairs", str(tmp_path / "nope.jsonl")]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args += ["--model", tiny_bert, "-o", str(out_dir / "mined.jsonl"), "--num-negatives", "1",
             "--cache-dir", str(tmp_path / "cache")]
    rc, err = _mine(capsys, *args, *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("embedkit: error")]
    assert errors == [lines[-1]] and lines[-1].startswith("embedkit: error: "), err  # one line, last
    assert expected in lines[-1] and "Traceback" not in err
    assert list(out_dir.iterdir()) == []  # no partial or temporary output


def test_cli_skip_invalid_reports_the_summary(tiny_bert, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mined.jsonl"
    rc, err = _mine(capsys, "--pairs", str(_bad_pairs(tmp_path)), "--model", tiny_bert, "-o", str(out),
                    "--num-negatives", "1", "--max-score-ratio", "none", "--skip-invalid", "--no-cache")
    assert rc == 0, err
    assert "skipped 1 of 3 records: 1 'positive_scores' length mismatch" in err
    assert [p.query for p in load_pairs(out)] == ["q1", "q3"]


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli", "mine", "--pairs", str(_bad_pairs(tmp_path)),
                           "-o", str(tmp_path / "o.jsonl")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("embedkit: error: ")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.jsonl").exists()


def test_cli_output_is_checked_before_the_pairs_are_read(tiny_bert, tmp_path: Path, capsys, monkeypatch) -> None:
    import embedkit.data.readers as readers

    def no_read(*a, **k):
        raise AssertionError("the pairs were read before the output path was checked")

    monkeypatch.setattr(readers, "load_pairs", no_read)
    (tmp_path / "folder").mkdir()
    rc, err = _mine(capsys, "--pairs", str(_bad_pairs(tmp_path)), "--model", tiny_bert,
                    "-o", str(tmp_path / "folder"))
    assert rc == 2 and err.count("\n") == 1
    assert "--output: output" in err and "is a folder" in err and "fix:" in err


def test_cli_failed_run_removes_the_output_folders_it_created(tmp_path: Path, capsys) -> None:
    """The miner makes the output's parent folders before loading the model; a failure must take them away."""
    rc, err = _mine(capsys, "--pairs", str(_bad_pairs(tmp_path)), "--skip-invalid",
                    "--model", str(tmp_path / "nomodel"), "-o", str(tmp_path / "new" / "sub" / "mined.jsonl"), "--no-cache")
    assert rc == 2 and "nomodel" in err.strip().splitlines()[-1]
    assert not (tmp_path / "new").exists()


def test_cli_mines_the_split_it_is_given(tiny_bert, tmp_path: Path, capsys) -> None:
    """A BEIR folder is read at --split (default train, never a silent fall-back to test)."""
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    docs = [f"tool {i} copies files between folders" for i in range(6)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": f"copy with tool {i}"}) + "\n"
                                                for i in range(6)))
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in (1, 4)))
    out = tmp_path / "mined.jsonl"
    rc, err = _mine(capsys, "--pairs", str(root), "--model", tiny_bert, "-o", str(out), "--num-negatives", "2",
                    "--max-score-ratio", "none", "--no-cache")
    assert rc == 2 and "'train' split" in err and not out.exists()
    rc, err = _mine(capsys, "--pairs", str(root), "--split", "dev", "--model", tiny_bert, "-o", str(out),
                    "--num-negatives", "2", "--max-score-ratio", "none", "--no-cache")
    assert rc == 0, err
    mined = load_pairs(out)
    assert sorted(p.query for p in mined) == ["copy with tool 1", "copy with tool 4"]
