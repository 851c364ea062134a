"""Crash-safe outputs: write to a temporary sibling, then rename atomically.

A killed process leaves either the old output or the complete new one, never a partial file or folder.

Example:
    >>> import tempfile, os
    >>> from embedkit.utils.io import atomic_file
    >>> d = tempfile.mkdtemp()
    >>> with atomic_file(os.path.join(d, "out.txt")) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(os.path.join(d, "out.txt")).read()
    'hello'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from embedkit.errors import OutputError


def check_writable_parent(path: str | os.PathLike) -> Path:
    """Fail early (before any work) if ``path``'s parent folder cannot be created or written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create output folder {parent}: {exc.strerror}", hint="choose a writable output path"
        ) from None
    if not os.access(parent, os.W_OK):
        raise OutputError(f"output folder {parent} is not writable", hint="choose a writable output path")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path`` (atomic on POSIX)."""
    path = check_writable_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path``.

    ``path`` must not exist unless ``overwrite`` is true (then the old folder is swapped out only after the
    new one is complete). On any exception the temporary folder is removed and ``path`` is untouched.
    """
    path = check_writable_parent(path)
    if path.exists() and not overwrite:
        raise OutputError(
            f"output folder {path} already exists", hint="pass a new path, or --overwrite to replace it"
        )
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; outputs get the user's normal permissions
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
