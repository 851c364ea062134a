import json
import subprocess
import sys

import numpy as np

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
