"""The wheel a ``pip install embedkit`` user gets: built from the sources, installed into a fresh venv, used from a
folder outside the checkout (bundled recipes by name, the bundled samples, ``--pairs``).

No download: the fresh venv sees the test venv's installed dependencies through a ``.pth`` file, and pip installs
the wheel with ``--no-index`` under ``scripts/constraints.txt``, so the wheel's declared requirements must resolve
against the pinned, already-installed set. The test venv's editable embedkit is not visible there (its finder lives in
a ``.pth`` that only the test venv's own site folder runs), so every ``embedkit`` below is the wheel's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("wheel")
    # build from a copy of what the wheel is made of: the checkout's build/ may hold files deleted since
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "embedkit", src / "embedkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)])
    wheel = next(dist.glob("embedkit-*.whl"))

    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "_embedkit_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {**os.environ, "PIP_CONSTRAINT": str(REPO / "scripts" / "constraints.txt"),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("PYTHONPATH", None)
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "-q", str(wheel)], env=env)
    user = root / "elsewhere"  # a user's folder: no checkout, no recipes/ next to it
    user.mkdir()
    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run_env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return {"wheel": wheel, "bin": env_dir / "bin", "python": python, "cwd": user, "env": run_env}


def _embedkit(installed: dict, *args: str) -> subprocess.CompletedProcess:
    return _run([str(installed["bin"] / "embedkit"), *args], cwd=installed["cwd"], env=installed["env"])


def test_wheel_holds_the_recipes_and_samples(installed: dict) -> None:
    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    recipes = {p.name for p in (REPO / "embedkit" / "recipes").glob("*.yaml")}
    assert recipes and {f"embedkit/recipes/{n}" for n in recipes} <= names
    assert "embedkit/datasets/debian/train.jsonl.gz" in names
    launch = {p.name for p in (REPO / "embedkit" / "recipes" / "launch").iterdir() if p.suffix in (".yaml", ".json")}
    assert {"ddp.yaml", "fsdp.yaml", "zero2.yaml", "zero3.yaml", "zero2.json", "zero3.json"} <= launch
    assert {f"embedkit/recipes/launch/{n}" for n in launch} <= names  # the launch configs ship too
    assert not any(n.startswith(("tests/", "eval/", "recipes/")) for n in names)


def test_installed_embedkit_is_the_wheels(installed: dict) -> None:
    where = _run([str(installed["python"]), "-c", "import embedkit; print(embedkit.__file__)"],
                 cwd=installed["cwd"], env=installed["env"]).stdout.strip()
    assert Path(where).is_relative_to(installed["bin"].parent), where


def test_recipes_lists_the_bundled_recipes(installed: dict) -> None:
    out = _embedkit(installed, "recipes").stdout
    assert [ln.split()[0] for ln in out.splitlines()] == sorted(
        p.stem for p in (REPO / "embedkit" / "recipes").glob("*.yaml"))


def test_train_bundled_recipe_on_bundled_pairs_dry_run(installed: dict) -> None:
    proc = _embedkit(installed, "train", "minilm-cpu", "--pairs", "sample:debian-train", "--dry-run",
                     "-o", "runs/mine")
    assert "train: debian: 4000 pairs" in proc.stderr and "recipe OK" in proc.stderr
    assert not (installed["cwd"] / "runs" / "mine").exists()
