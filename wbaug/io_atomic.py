"""The one atomic file writer used for every file wbaug (and the zoo) writes.

:func:`atomic_write` opens a fresh temporary file **in the target's directory** (``tempfile.mkstemp``:
an unpredictable name, created with ``O_EXCL``, so no symlink planted at a guessable temporary name is
ever followed), lets the caller write it, then ``flush`` + ``fsync`` the file, ``os.replace`` it onto the
target and ``fsync`` the directory. A kill, a full disk or an exception at any moment leaves either the
previous file or the new one -- never a torn or empty file -- and on an error the temporary file is
removed.

Symbolic links: a symlink **at the target** is refused (``ValueError`` naming the path) -- the writer
never writes through a link, and it does not silently replace a link the user made either. (Should a
link appear between the check and the rename, ``os.replace`` replaces the link itself; it never follows
it.) Links in the *parent* directories are ordinary path resolution and are allowed.

Temporary names are ``.<name>.<random>.wbaug-tmp``; a SIGKILL between creation and rename can leave one
behind (the target is intact). :func:`remove_stale_temporaries` deletes those of one target name; the
trainers call it when they take over an output directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "remove_stale_temporaries",
]

TEMP_SUFFIX = ".wbaug-tmp"


def _check_target(path: str | os.PathLike) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if p.name in ("", ".", ".."):
        raise ValueError(f"path {str(p)!r} does not name a file")
    if p.is_symlink():
        raise ValueError(
            f"path {str(p)!r} is a symbolic link; wbaug never writes through or replaces a link: "
            "remove the link or choose another path"
        )
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; expected a file path", str(p))
    return p


def _umask() -> int:
    try:  # Linux >= 4.7 reports it without the racy set-and-restore
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    encoding: str | None = None,
    newline: str | None = None,
    make_parents: bool = True,
) -> Iterator[IO[Any]]:
    """Context manager yielding a file object whose content replaces ``path`` atomically on success.

    Args:
        path: the target file (its parent directories are created when ``make_parents``).
        mode: ``"wb"`` (default) or ``"w"`` (text; ``encoding`` defaults to UTF-8).
        encoding, newline: as for :func:`open` in text mode.
        make_parents: create missing parent directories.

    Raises:
        ValueError: ``path`` is a symbolic link (never followed, never replaced).
        IsADirectoryError: ``path`` is a directory.
        OSError: the write, ``fsync`` or rename failed (e.g. ``ENOSPC``); the message names ``path``,
            the previous file is untouched and the temporary file is removed.

    A new file gets the permissions ``open`` would give (``0o666`` less the umask); an overwritten
    file keeps its permission bits.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "notes.txt"
        >>> with atomic_write(target, "w") as fh:
        ...     _ = fh.write("hello")
        >>> target.read_text()
        'hello'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    p = _check_target(path)
    parent = p.parent
    if make_parents:
        parent.mkdir(parents=True, exist_ok=True)
    try:
        perms = stat.S_IMODE(os.stat(p).st_mode)
    except FileNotFoundError:
        perms = 0o666 & ~_umask()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=TEMP_SUFFIX, dir=parent)
    tmp = Path(tmp_name)
    try:
        try:
            fh = os.fdopen(
                fd, mode, **({"encoding": encoding or "utf-8", "newline": newline} if mode == "w" else {})
            )
        except BaseException:
            os.close(fd)
            raise
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, perms)
        _check_target(p)  # refuse a link that appeared while writing
        os.replace(tmp, p)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None:
            raise OSError(
                err.errno, f"{err.strerror or err}; {str(p)!r} was not written (left as it was)", str(p)
            ) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data`` (see :func:`atomic_write`). Returns ``Path(path)``."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Atomically replace ``path`` with ``text`` (see :func:`atomic_write`). Returns ``Path(path)``."""
    with atomic_write(path, "w", encoding=encoding, newline="") as fh:
        fh.write(text)
    return Path(path)


def remove_stale_temporaries(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete temporary files :func:`atomic_write` left in ``directory`` when a writer was killed.

    Only names of the form ``.<name>.<random>.wbaug-tmp`` (and the ``.<name>.tmp<pid>`` names of earlier
    zoo writers) are touched -- for the target file ``name`` only, or for every target when ``name`` is
    None. Call it only when no other process is writing there (e.g. when a trainer takes over its output
    directory).

    Returns:
        The removed paths.
    """
    folder = Path(directory)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    stem = re.escape(name) if name is not None else r".+"
    pattern = re.compile(rf"\.{stem}\.(?:[^/]+{re.escape(TEMP_SUFFIX)}|tmp\d+)")
    for q in folder.iterdir():
        if pattern.fullmatch(q.name) and not q.is_symlink() and q.is_file():
            q.unlink(missing_ok=True)
            removed.append(q)
    return removed
