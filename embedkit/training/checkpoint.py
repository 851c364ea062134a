"""Crash-safe checkpoint folders: written under a temporary name, renamed into place only when complete.

transformers' ``Trainer`` writes ``checkpoint-N`` in place, file by file; a process killed during a save leaves a
folder that *looks* like the latest checkpoint but lacks the optimizer state or holds half a weights file, and
``--resume`` then fails (or silently resumes wrong). Here:

1. every rank writes into ``.checkpoint-N.partial`` (a name ``get_last_checkpoint`` never matches);
2. after a barrier, rank 0 writes :data:`COMPLETE_MARKER` (with the list of files and their sizes), then
   atomically renames the folder to ``checkpoint-N``;
3. old checkpoints are first renamed to ``.checkpoint-M.deleting`` (atomic), then removed.

So a ``checkpoint-N`` folder either does not exist or is complete, and :func:`last_complete_checkpoint` picks the
newest one whose marker matches its files. Stale ``.partial`` / ``.deleting`` folders from a killed run are
removed by :func:`clean_stale`.

Example:
    >>> import tempfile
    >>> from embedkit.training.checkpoint import last_complete_checkpoint
    >>> last_complete_checkpoint(tempfile.mkdtemp()) is None
    True
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

COMPLETE_MARKER = "embedkit_checkpoint.json"
_RE_CKPT = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def partial_name(step: int) -> str:
    return f".checkpoint-{step}.partial"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_list(folder: Path) -> dict[str, int]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != COMPLETE_MARKER:
            out[str(p.relative_to(folder))] = p.stat().st_size
    return out


def write_marker(folder: Path, extra: dict[str, Any] | None = None) -> None:
    """Record the folder's files (and sizes) as complete; fsync so the rename that follows is durable."""
    for p in folder.rglob("*"):
        if p.is_file():
            try:
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
    info = {"files": _file_list(folder), **(extra or {})}
    tmp = folder / (COMPLETE_MARKER + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / COMPLETE_MARKER)
    _fsync_dir(folder)


def is_complete(folder: str | os.PathLike) -> bool:
    """True when ``folder`` has a marker and every file it lists exists with the recorded size."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    for rel, size in info.get("files", {}).items():
        p = folder / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def publish(partial: Path, final: Path) -> None:
    """Atomically move a completed ``partial`` folder to ``final`` (replacing an older one of the same step)."""
    if final.exists():
        old = final.with_name(f".{final.name}.deleting")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, final)
    _fsync_dir(final.parent)


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(step, path)]`` of ``checkpoint-N`` folders in ``run_dir``, oldest first (complete or not)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    out = []
    for p in run_dir.iterdir():
        m = _RE_CKPT.match(p.name)
        if m and p.is_dir():
            out.append((int(m.group(1)), p))
    return sorted(out)


def last_complete_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``run_dir`` (``None`` when there is none)."""
    for _, path in reversed(list_checkpoints(run_dir)):
        if is_complete(path):
            return path
    return None


def rotate(run_dir: str | os.PathLike, keep: int | None) -> None:
    """Keep the ``keep`` newest complete checkpoints; older ones are renamed away first, then deleted."""
    if keep is None:
        return
    ckpts = [(s, p) for s, p in list_checkpoints(run_dir) if is_complete(p)]
    for _, path in ckpts[: max(0, len(ckpts) - keep)]:
        doomed = path.with_name(f".{path.name}.deleting")
        shutil.rmtree(doomed, ignore_errors=True)
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def clean_stale(run_dir: str | os.PathLike) -> list[str]:
    """Remove leftovers of killed saves (``.partial`` / ``.deleting`` folders) and incomplete checkpoints."""
    run_dir = Path(run_dir)
    removed: list[str] = []
    if not run_dir.is_dir():
        return removed
    for p in run_dir.iterdir():
        if p.is_dir() and p.name.startswith(".checkpoint-") and p.name.endswith((".partial", ".deleting")):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    for _, p in list_checkpoints(run_dir):
        if not is_complete(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed
