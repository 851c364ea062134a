import json
import subprocess
import sys

import numpy as np
import pytest

from embedkit.cli import main


def test_encode_cli_roundtrip(tmp_path, minilm_path):
    src = tmp_path / "t.jsonl"
    src.write_text("\n".join(json.dumps({"id": f"d{i}", "text": t}) for i, t in
                             enumerate(["list directory contents", "copy files and directories"])) + "\n")
    out = tmp_path / "e.npy"
    assert main(["encode", "--model", minilm_path, "-i", str(src), "-o", str(out)]) == 0
    emb = np.load(out)
    assert emb.shape == (2, 384)
    assert (tmp_path / "e.ids.txt").read_text().split() == ["d0", "d1"]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_encode_cli_bad_json_one_line_error(tmp_path, minilm_path):
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "ok"}\n{"text": broken}\n')
    out = tmp_path / "e.npy"
    proc = subprocess.run([sys.executable, "-m", "embedkit.cli", "encode", "--model", minilm_path, "-i", str(src),
                           "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "t.jsonl:2" in lines[0] and "invalid JSON" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


# ---- inputs: the same readers as pairs (issue 27, item 9)

def _encode_file(tmp_path, minilm_path, src, capsys=None) -> tuple[np.ndarray, list[str]]:
    out = tmp_path / "e.npy"
    assert main(["encode", "--model", minilm_path, "-i", str(src), "-o", str(out)]) == 0
    return np.load(out), (tmp_path / "e.ids.txt").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def minilm_model(minilm_path):
    from embedkit import load_model

    return load_model(minilm_path)


def test_encode_csv_is_one_vector_per_record(tmp_path, minilm_path, minilm_model):
    """A header and a quoted newline used to give 4 vectors for 2 records."""
    from embedkit import encode

    src = tmp_path / "docs.csv"
    src.write_text('id,text\nd1,"copy files\nand directories"\nd2,list directory contents\n', encoding="utf-8")
    emb, ids = _encode_file(tmp_path, minilm_path, src)
    assert emb.shape == (2, 384) and ids == ["d1", "d2"]
    expected = encode(minilm_model, ["copy files\nand directories", "list directory contents"])
    np.testing.assert_allclose(emb, expected, atol=1e-5)


def test_encode_gzipped_jsonl_and_tsv_without_ids(tmp_path, minilm_path, minilm_model):
    import gzip

    from embedkit import encode

    texts = ["café au lait", "list directory contents"]
    src = tmp_path / "docs.jsonl.gz"
    src.write_bytes(gzip.compress("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts).encode()))
    emb, ids = _encode_file(tmp_path, minilm_path, src)
    np.testing.assert_allclose(emb, encode(minilm_model, texts), atol=1e-5)
    assert ids == ["1", "2"]  # the line each record starts on
    tsv = tmp_path / "docs.tsv"
    tsv.write_text("text\n" + "\n".join(texts) + "\n", encoding="utf-8")
    emb, ids = _encode_file(tmp_path, minilm_path, tsv)
    np.testing.assert_allclose(emb, encode(minilm_model, texts), atol=1e-5)
    assert ids == ["2", "3"]


def test_encode_plain_text_and_parquet(tmp_path, minilm_path, minilm_model):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedkit import encode

    texts = ["copy files", "remove files"]
    txt = tmp_path / "docs.txt"
    txt.write_text("\n".join(texts) + "\n", encoding="utf-8")
    emb, ids = _encode_file(tmp_path, minilm_path, txt)
    np.testing.assert_allclose(emb, encode(minilm_model, texts), atol=1e-5)
    assert ids == ["1", "2"]
    pq.write_table(pa.table({"id": ["a", "b"], "text": texts}), tmp_path / "docs.parquet")
    emb, ids = _encode_file(tmp_path, minilm_path, tmp_path / "docs.parquet")
    np.testing.assert_allclose(emb, encode(minilm_model, texts), atol=1e-5)
    assert ids == ["a", "b"]


# ---- outputs: checked before the model loads; written together or not at all (item 8)

def test_encode_output_folder_is_refused_before_the_model_loads(tmp_path, minilm_path, capsys, monkeypatch):
    import embedkit.models

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(embedkit.models, "load_model", no_load)
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "a"}\n')
    (tmp_path / "e.npy").mkdir()
    assert main(["encode", "--model", minilm_path, "-i", str(src), "-o", str(tmp_path / "e.npy")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "e.npy is a folder" in err and "fix:" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.npy", "t.jsonl"]  # no stray e.ids.txt


def test_atomic_files_roll_back_when_one_target_cannot_be_replaced(tmp_path):
    from embedkit.utils.io import atomic_files

    first, second = tmp_path / "a.npy", tmp_path / "a.ids.txt"
    first.write_text("old")
    with pytest.raises(OSError):
        with atomic_files(first, second) as (t1, t2):
            open(t1, "w").write("new")
            open(t2, "w").write("ids")
            second.mkdir()  # appears after the checks: the second rename fails
            (second / "x").write_text("")
    assert first.read_text() == "old"  # the first output got its old content back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ids.txt", "a.npy"]  # no temporaries left
