"""Start-up of the ``embedkit`` command: median wall time and peak RSS of ``--help``, each ``<cmd> --help``,
``recipes`` and ``train minilm-cpu --dry-run``, each run N times in a fresh process.

Targets (issue 28): every ``--help`` <= 1.0 s median and <= 150 MB peak RSS; ``train R --dry-run`` <= 5 s plus the
time to read the data. ``--before COMMIT`` measures the same commands on an older commit too (checked out with
``git worktree`` into a temporary folder, removed afterwards, and put first on ``PYTHONPATH``): 5827752 is the last
commit before the lazy imports.

Each process runs exactly what the console script runs (``from embedkit.cli import main``); its peak RSS is the
kernel's high-water mark for that one child (``os.wait4``). One untimed warm-up run per command fills the page cache.

Example::

    .venv/bin/python eval/bench_startup.py                       # this checkout, 5 runs per command
    .venv/bin/python eval/bench_startup.py --before 5827752 -n 5 --json runs/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
#: the sub-commands whose ``--help`` is measured (those a tree does not have are reported as n/a)
COMMANDS = ("train", "recipes", "mntp", "mine", "eval", "soup", "encode")
HELP_LIMIT_S, HELP_LIMIT_MB, DRY_RUN_LIMIT_S = 1.0, 150.0, 5.0

_ENTRY = "import sys; from embedkit.cli import main; sys.exit(main())"


def _env(source: Path | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)
    if source is not None:  # ahead of the installed (editable) embedkit, whose finder comes after sys.path
        env["PYTHONPATH"] = str(source)
    return env


def run_once(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one ``embedkit ARGV`` process."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _ENTRY, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss: KiB on Linux


def measure(argv: list[str], env: dict[str, str], cwd: Path, n: int) -> dict:
    run_once(argv, env, cwd)  # warm-up: page cache, .pyc files
    runs = [run_once(argv, env, cwd) for _ in range(n)]
    codes = {c for _, _, c in runs}
    return {"median_s": statistics.median(w for w, _, _ in runs), "peak_rss_mb": max(r for _, r, _ in runs),
            "exit_codes": sorted(codes), "ok": codes == {0}}


def commands_for(tree: Path, out: Path) -> dict[str, list[str]]:
    """Label -> argv for one source tree (an older tree names its recipe by path: it has no bundled names)."""
    recipe = "minilm-cpu" if (tree / "embedkit" / "recipes" / "minilm-cpu.yaml").exists() \
        else str(tree / "recipes" / "minilm-cpu.yaml")
    cmds = {"embedkit --help": ["--help"]}
    cmds.update({f"embedkit {c} --help": [c, "--help"] for c in COMMANDS})
    cmds["embedkit recipes"] = ["recipes"]
    cmds["embedkit train minilm-cpu --dry-run"] = ["train", recipe, "--dry-run", "-o", str(out / "dry-run")]
    return cmds


def bench_tree(tree: Path, source: Path | None, n: int) -> dict[str, dict]:
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="embedkit-startup-") as tmp:
        cwd = Path(tmp)
        env = _env(source)
        for label, argv in commands_for(tree, cwd).items():
            results[label] = measure(argv, env, cwd, n)
            print(f"  {label}: {_cell(results[label])}", file=sys.stderr, flush=True)
    return results


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """``commit`` checked out (detached) into a temporary folder, removed again afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="embedkit-before-"))
    path = parent / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(path), commit], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(parent, ignore_errors=True)


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    if not r["ok"]:
        return f"n/a (exit {','.join(map(str, r['exit_codes']))})"
    return f"{r['median_s']:.2f} s, {r['peak_rss_mb']:.0f} MB"


def _met(label: str, r: dict) -> str:
    if not r["ok"]:
        return "FAILED"
    if label.endswith("--dry-run"):
        return "yes" if r["median_s"] <= DRY_RUN_LIMIT_S else "no"
    if label.endswith("--help") or label == "embedkit recipes":
        return "yes" if r["median_s"] <= HELP_LIMIT_S and r["peak_rss_mb"] <= HELP_LIMIT_MB else "no"
    return ""


def table(after: dict[str, dict], before: dict[str, dict] | None, before_name: str) -> str:
    head = ["command", "now (median, peak RSS)"] + ([f"before ({before_name})"] if before else []) + ["target met?"]
    rows = [head, ["---"] * len(head)]
    for label, r in after.items():
        row = [f"`{label}`", _cell(r)]
        if before is not None:
            row.append(_cell(before.get(label)))
        row.append(_met(label, r))
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--before", metavar="COMMIT", help="also measure this commit (e.g. 5827752)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    args = parser.parse_args(argv)

    before = None
    if args.before:
        print(f"before: {args.before}", file=sys.stderr)
        with worktree(args.before) as tree:
            before = bench_tree(tree, tree, args.runs)
    print("now: this checkout", file=sys.stderr)
    after = bench_tree(REPO, REPO, args.runs)
    print(table(after, before, args.before or ""))
    print(f"\n{args.runs} runs per command after one warm-up; {platform.node()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; targets: --help <= {HELP_LIMIT_S} s and <= {HELP_LIMIT_MB:.0f} MB, "
          f"train --dry-run <= {DRY_RUN_LIMIT_S} s plus data reading")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": args.runs, "now": after, "before": before,
                                         "before_commit": args.before, "date": time.strftime("%Y-%m-%d"),
                                         "cpus": os.cpu_count()}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in after.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
