"""``embedkit teacher``: a cross-encoder trained by sentence-transformers' trainer on real bundled pairs with mined
negatives, saved as a CrossEncoder folder that both sentence-transformers and embedkit's teacher loader read.

Tiny random BERT (conftest ``tiny_bert``) and a few steps: the checks are about the pipeline, not the quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from embedkit.cli import main
from embedkit.data.readers import load_pairs, write_pairs
from embedkit.data.samples import sample_path
from embedkit.data.schema import Pair
from embedkit.training.teacher import TeacherConfig, build_rows, train_teacher

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mined(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Path:
    """24 real Debian training pairs with 3 negatives each, mined by the real MiniLM (a random tiny BERT scores
    every candidate alike, and the positive-aware filter rightly drops them all)."""
    from embedkit.mining.miner import mine_hard_negatives

    pairs = list(load_pairs(sample_path("debian-train")))[:24]
    out = tmp_path_factory.mktemp("mined") / "mined.jsonl"
    result = mine_hard_negatives(pairs, minilm_path, num_negatives=3, cache_dir=None, output=out,
                                 show_progress_bar=False)
    assert all(p.negatives for p in result.pairs)
    return out


def test_build_rows_bce_and_listwise() -> None:
    pairs = [Pair("q1", ["p1"], ["n1", "n2", "n3"]), Pair("q2", ["p2a", "p2b"], ["m1"]), Pair("q3", ["p3"])]
    rows, skipped = build_rows(pairs, "bce", num_negatives=2)
    assert skipped == 1
    assert rows == {"query": ["q1", "q1", "q1", "q2", "q2", "q2"], "document": ["p1", "n1", "n2", "p2a", "p2b", "m1"],
                    "label": [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]}
    rows, skipped = build_rows(pairs, "lambda", num_negatives=2)
    assert skipped == 1
    assert rows == {"query": ["q1", "q2"], "docs": [["p1", "n1", "n2"], ["p2a", "p2b", "m1"]],
                    "labels": [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]}


@pytest.mark.parametrize("loss", ["bce", "listnet", "lambda"])
def test_teacher_trains_saves_and_loads(loss: str, mined: Path, tiny_bert: str, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    from embedkit.mining.teacher import Teacher

    out = tmp_path / "ce"
    cfg = TeacherConfig(model=tiny_bert, loss=loss, steps=3, batch_size=4, max_seq_length=64, num_negatives=2)
    result = train_teacher(mined, out, cfg, show_progress_bar=False)
    assert result.steps == 3 and result.loss == loss and np.isfinite(result.train_loss)
    assert result.records == 24 and result.skipped_without_negatives == 0
    assert result.rows == (24 * 3 if loss == "bce" else 24)

    # a normal CrossEncoder folder, safetensors only, with embedkit's card
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt")) for n in names)
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))
    card = (out / "README.md").read_text(encoding="utf-8")
    cls = {"bce": "BinaryCrossEntropyLoss", "listnet": "ListNetLoss", "lambda": "LambdaLoss"}[loss]
    assert cls in card and "3 optimizer steps" in card and str(mined) in card
    info = json.loads((out / "embedkit_teacher.json").read_text())
    assert info["result"]["steps"] == 3 and info["config"]["loss"] == loss

    # the weights were trained: the encoder differs from the tiny BERT it started from
    start = load_file(Path(tiny_bert) / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    key = next(k for k in trained if k.endswith("embeddings.word_embeddings.weight"))
    base_key = next(k for k in start if k.endswith("embeddings.word_embeddings.weight"))
    assert not np.allclose(trained[key].numpy(), start[base_key].numpy())

    # both loaders read it and score alike
    pairs = [("list directory contents", "ls lists files"), ("copy files", "a music player")]
    ce = CrossEncoder(str(out), local_files_only=True)
    assert ce.num_labels == 1
    teacher = Teacher.load(out, "cross")
    direct = ce.predict(pairs, convert_to_numpy=True)
    via = teacher.score_lists([pairs[0][0], pairs[1][0]], [[pairs[0][1]], [pairs[1][1]]])
    np.testing.assert_allclose([via[0][0], via[1][0]], direct, rtol=1e-5, atol=1e-6)


def test_teacher_is_seeded(mined: Path, tiny_bert: str, tmp_path: Path) -> None:
    """Same seed, same weights: the head initialisation and the data order come from ``seed``."""
    cfg = TeacherConfig(model=tiny_bert, steps=2, batch_size=4, max_seq_length=64, num_negatives=1)
    train_teacher(mined, tmp_path / "a", cfg, show_progress_bar=False)
    train_teacher(mined, tmp_path / "b", cfg, show_progress_bar=False)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_cli_teacher_skips_records_without_negatives(mined: Path, tiny_bert: str, tmp_path: Path, capsys) -> None:
    pairs = list(load_pairs(mined))
    mixed = tmp_path / "mixed.jsonl"
    write_pairs([*pairs[:8], Pair("a query without negatives", ["its document"])], mixed)
    out = tmp_path / "teachers" / "ce"
    code = main(["teacher", "--pairs", str(mixed), "--model", tiny_bert, "--loss", "listnet", "--steps", "2",
                 "--batch-size", "2", "--max-seq-length", "64", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "on 8 records" in err and "1 without negatives skipped" in err
    info = json.loads((out / "embedkit_teacher.json").read_text())
    assert info["result"]["skipped_without_negatives"] == 1 and info["config"]["model"] == tiny_bert
    # an existing output needs --overwrite; with it the folder is replaced
    assert main(["teacher", "--pairs", str(mixed), "--model", tiny_bert, "--steps", "1", "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["teacher", "--pairs", str(mixed), "--model", tiny_bert, "--steps", "1", "--batch-size", "2",
                 "--max-seq-length", "64", "-o", str(out), "--overwrite"]) == 0
    assert json.loads((out / "embedkit_teacher.json").read_text())["config"]["loss"] == "bce"


def test_every_setting_has_a_flag_with_its_default() -> None:
    from embedkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["teacher"]
    text = " ".join(sub.format_help().split())
    for name, field in TeacherConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in text, flag
        if field.default is not None:
            assert f"(default: {field.default})" in text, name


def test_teacher_help_imports_nothing_heavy() -> None:
    code = ("import json, sys\nfrom embedkit.cli import main\n"
            "try:\n    main(['teacher', '--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = ('torch', 'transformers', 'sentence_transformers', 'datasets', 'mteb', 'faiss')\n"
            "sys.stderr.write(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "usage: embedkit teacher" in proc.stdout
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
