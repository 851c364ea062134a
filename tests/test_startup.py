"""Start-up: ``import embedkit`` and every ``--help`` stay light (no torch / transformers / sentence-transformers),
the public API still resolves on first use, and Ctrl-C while the heavy libraries load ends in one line, exit 130.

Each check runs in a fresh interpreter: this test process has long imported torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "mteb", "faiss", "peft", "datasets")
COMMANDS = ("train", "recipes", "teacher", "mntp", "mine", "eval", "soup", "encode", "synth")


def _python(code: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **kw.pop("env", {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=300, **kw)


def test_import_embedkit_and_the_console_entry_import_nothing_heavy() -> None:
    proc = _python(f"""
        import json, sys
        import embedkit, embedkit.cli, embedkit.models, embedkit.commands.encode
        print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


@pytest.mark.parametrize("argv", [["--help"], *[[c, "--help"] for c in COMMANDS]], ids=" ".join)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    proc = _python(f"""
        import json, sys
        from embedkit.cli import main
        try:
            main({argv!r})
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        sys.stderr.write(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    assert "usage: embedkit" in proc.stdout


def test_public_api_resolves_lazily() -> None:
    proc = _python("""
        import sys
        import embedkit
        assert "torch" not in sys.modules
        from embedkit.encode import plan_batches          # the submodule of the same name as the function
        assert callable(embedkit.encode) and embedkit.encode.__module__ == "embedkit.encode"
        assert embedkit.similarity.__module__ == "embedkit.encode"
        assert embedkit.load_model.__name__ == "load_model"
        assert embedkit.ModelConfig(name="minilm").name == "minilm"
        from embedkit import InputError, ModelError, OutputError, ConfigError, EmbedkitError, load_model, encode
        from embedkit.models import LoraConfig, Pooling, resolve_model_path
        assert set(embedkit.__all__) <= set(dir(embedkit))
        try:
            embedkit.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("no AttributeError")
    """)
    assert proc.returncode == 0, proc.stderr


# A finder that, when ``torch`` is first imported, says so on stdout and then waits inside that import: the test
# sends SIGINT exactly while the process is loading the heavy libraries, as a user pressing Ctrl-C does.
_HOOK = """
import sys, time

class _WaitInTorchImport:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            print("IMPORTING-TORCH", flush=True)
            time.sleep(120)
        return None

sys.meta_path.insert(0, _WaitInTorchImport())
"""


def _interrupted_run(tmp_path: Path, argv: list[str]) -> tuple[int, str]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_HOOK)
    path = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    script = Path(sys.executable).with_name("embedkit")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "embedkit.cli"]
    proc = subprocess.Popen([*cmd, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "IMPORTING-TORCH", line
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.parametrize("command", ["encode", "mine"])
def test_ctrl_c_while_loading_libraries_is_one_line_exit_130(tmp_path: Path, command: str) -> None:
    src = tmp_path / "t.jsonl"
    src.write_text('{"query": "q", "positive": "d", "text": "a"}\n')
    argv = (["encode", "-i", str(src), "-o", str(tmp_path / "out" / "e.npy")] if command == "encode"
            else ["mine", "--pairs", str(src), "-o", str(tmp_path / "out" / "m.jsonl")])
    code, err = _interrupted_run(tmp_path, argv)
    assert code == 130, err
    assert [ln for ln in err.splitlines() if ln.strip()] == ["embedkit: interrupted"], err
    assert not (tmp_path / "out").exists()


def test_listing_the_recipes_imports_nothing_heavy() -> None:
    proc = _python(f"""
        import json, sys
        from embedkit.cli import main
        assert main(["recipes"]) == 0
        sys.stderr.write(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []
    assert "minilm-cpu" in proc.stdout


def test_train_dry_run_does_not_import_torch(tmp_path: Path) -> None:
    """Validating a recipe and reading its data needs no model library: the dry run answers in well under 5 s."""
    proc = _python(f"""
        import json, sys
        from embedkit.cli import main
        assert main(["train", "minilm-cpu", "--dry-run", "-o", {str(tmp_path / "out")!r}]) == 0
        sys.stderr.write(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == []


def _encode_stderr(tmp_path: Path, *, tty: bool) -> str:
    """stderr of a real ``embedkit encode`` (it loads a model's weights), to a pipe or to a terminal."""
    src = tmp_path / "t.jsonl"
    src.write_text('{"text": "hello"}\n{"text": "world"}\n')
    script = Path(sys.executable).with_name("embedkit")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "embedkit.cli"]
    cmd += ["encode", "--model", "minilm", "-i", str(src), "-o", str(tmp_path / ("tty" if tty else "pipe") / "e.npy")]
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if not tty:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 0-column terminal gets no bars
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=follower, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=300) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_weight_loading_bar_is_off_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    err = _encode_stderr(tmp_path, tty=False)
    assert "Loading weights" not in err, err
    assert "wrote 2 embeddings" in err


@pytest.mark.slow
def test_weight_loading_bar_stays_on_a_terminal(tmp_path: Path) -> None:
    assert "Loading weights" in _encode_stderr(tmp_path, tty=True)
