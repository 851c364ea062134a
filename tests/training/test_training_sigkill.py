"""SIGKILL the real CLI during training and during a checkpoint save; ``--resume`` must give the same weights.

Each run is a separate ``python -m embedkit.cli train`` process killed with ``os.kill(pid, SIGKILL)`` (no cleanup
handlers run), exactly like an OOM kill or a pre-empted node.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from embedkit.training.checkpoint import is_complete, last_complete_checkpoint
from embedkit.training.config import load_recipe
from embedkit.training.runner import run_recipe

pytestmark = pytest.mark.slow

MAX_STEPS = 7
TIMEOUT = 600


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", EMBEDKIT_NO_PROGRESS="1",
               TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def _start(recipe: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "embedkit.cli", "train", str(recipe), "-o", str(out), *args]
    return subprocess.Popen(cmd, env=env or _env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(proc: subprocess.Popen, path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended (rc={proc.returncode}) before {path.name} appeared: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timeout waiting for {path}")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err.decode()[-3000:]


def _max_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


@pytest.fixture
def killable_recipe(write_recipe) -> Path:
    return write_recipe(training={"max_steps": MAX_STEPS}, output={"save_steps": 1, "save_total_limit": 2})


@pytest.fixture
def reference(killable_recipe: Path, tmp_path: Path) -> Path:
    """The uninterrupted run (same recipe, same seed)."""
    return run_recipe(load_recipe(killable_recipe), tmp_path / "reference").final_dir


def test_sigkill_at_three_random_steps_then_resume_matches_uninterrupted(
    killable_recipe: Path, reference: Path, tmp_path: Path
) -> None:
    steps = sorted(random.Random(int(time.time())).sample(range(1, MAX_STEPS - 1), 3))
    out = tmp_path / "killed"
    ckpts = out / "checkpoints"
    for i, step in enumerate(steps):
        proc = _start(killable_recipe, out, *(["--resume"] if i else []))
        _wait_for(proc, ckpts / f"checkpoint-{step}")
        _kill(proc)
        last = last_complete_checkpoint(ckpts)
        assert last is not None and int(last.name.split("-")[1]) >= step, steps
        assert not (out / "final").exists()
    _finish(_start(killable_recipe, out, "--resume"))
    assert is_complete(out / "final")
    assert _max_diff(reference, out / "final") <= 1e-6, f"killed at steps {steps}"


def test_sigkill_during_a_checkpoint_save_resumes_from_the_last_complete_one(
    killable_recipe: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "killed"
    ckpts = out / "checkpoints"
    # the save of step 4 sleeps half-way (model, optimizer and RNG written; trainer state not yet complete)
    proc = _start(killable_recipe, out, env=_env(EMBEDKIT_TEST_SAVE_DELAY="4:120"))
    _wait_for(proc, ckpts / ".checkpoint-4.partial" / "SAVING")
    _kill(proc)
    assert not (ckpts / "checkpoint-4").exists()  # never published under its final name
    assert (ckpts / ".checkpoint-4.partial" / "model.safetensors").exists()  # the half-written save is there
    assert last_complete_checkpoint(ckpts).name == "checkpoint-3"
    _finish(_start(killable_recipe, out, "--resume"))
    assert not (ckpts / ".checkpoint-4.partial").exists()  # cleaned up on resume
    assert _max_diff(reference, out / "final") <= 1e-6
