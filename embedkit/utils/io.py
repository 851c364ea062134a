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


def _nearest_existing(path: Path) -> Path:
    here = path
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def check_output_file(path: str | os.PathLike, *, where: str = "--output") -> Path:
    """Refuse, before any work and without creating anything, an output file path that cannot be written.

    Why: a command that encodes for minutes and then finds its output path is a folder (or under a file) wastes
    the run and used to end in an internal ``IsADirectoryError``. Missing parent folders are fine (they are made
    when the output is written); an existing folder at ``path``, a file where a parent folder should be, or a
    read-only parent are :class:`OutputError`.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> check_output_file(os.path.join(d, "new", "emb.npy")).name
        'emb.npy'
        >>> os.path.exists(os.path.join(d, "new"))
        False
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder", where=where,
                          hint="give a file path (e.g. inside that folder), or remove the folder")
    return check_parent_creatable(path, where=where)


def check_parent_creatable(path: str | os.PathLike, *, where: str | None = None) -> Path:
    """Refuse, without creating anything, a path whose parent folders could not be created or written.

    The checking half of :func:`check_writable_parent`, for dry runs and up-front checks: the folders are made only
    when the output is written. Example: ``check_parent_creatable("runs/new/out")`` creates no ``runs/``.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise OutputError(f"cannot create output folder {parent}: {existing} is a file", where=where,
                          hint="choose an output path under a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {existing} is not writable", where=where,
                          hint="choose a writable output path")
    return path


@contextlib.contextmanager
def removing_created_parents(*paths: str | os.PathLike) -> Iterator[None]:
    """On failure (any exception, Ctrl-C included), remove the folders above ``paths`` that the block created.

    Only folders that did not exist when the block began, and that are empty again once the block's own clean-up
    ran, are removed (deepest first): a failed run leaves the file system as it found it.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> try:
        ...     with removing_created_parents(os.path.join(d, "a", "b", "out.npy")):
        ...         os.makedirs(os.path.join(d, "a", "b"))
        ...         raise RuntimeError("failed")
        ... except RuntimeError:
        ...     pass
        >>> os.listdir(d)
        []
    """
    missing: list[Path] = []
    for p in paths:
        here = Path(p).absolute().parent
        while not here.exists() and here != here.parent:
            missing.append(here)
            here = here.parent
    try:
        yield
    except BaseException:
        for folder in sorted(set(missing), key=lambda f: len(f.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never remove what someone else put there
        raise


@contextlib.contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Several outputs that appear together or not at all (e.g. ``emb.npy`` and ``emb.ids.txt``).

    Yields one temporary path per output; on success each is renamed onto its target. If a rename fails, the
    targets already replaced get their old content back (or are removed if they are new), so no output is left
    half-updated.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> with atomic_files(os.path.join(d, "a.txt"), os.path.join(d, "b.txt")) as (a, b):
        ...     _ = open(a, "w").write("A"), open(b, "w").write("B")
        >>> sorted(os.listdir(d))
        ['a.txt', 'b.txt']
    """
    targets = [check_writable_parent(p) for p in paths]
    tmps: list[str] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for target in targets:
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            os.chmod(tmp, 0o666 & ~umask)
            tmps.append(tmp)
        yield list(tmps)
        done: list[tuple[Path, str | None]] = []  # (target, backup of its old content)
        try:
            for target, tmp in zip(targets, tmps):
                backup = None
                if target.exists() and not target.is_dir():
                    backup = f"{tmp}.old"
                    os.replace(target, backup)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    if backup is not None:
                        os.replace(backup, target)
                    raise
                done.append((target, backup))
        except BaseException:
            for target, backup in reversed(done):
                if backup is not None:
                    os.replace(backup, target)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(target)
            raise
        for _, backup in done:
            if backup is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(backup)
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


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
