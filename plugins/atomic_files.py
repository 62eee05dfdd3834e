"""Writing files so that a reader sees the old file or the new one, never a part, and a failure (an interrupt, a
full disk, a name taken meanwhile) leaves the old file as it was and no temporary file behind.

New files get the permissions any new file gets (0o666 less the umask, as `open` gives), not mkstemp's private
0600, and the umask is never read or set: the kernel applies it when the temporary file is created. No heavy
imports: plans, the registry and plugins all use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

#: Temporary files are named `.NAME.PID.RANDOM.partial`, so that a later run can tell a killed writer's leftovers
#: (its process is gone) from a file being written now.
_PARTIAL = re.compile(r"\..+\.(\d+)\.[0-9a-f]{16}\.partial")
#: Leftovers older than this are removed even when their process id is in use again (ids are reused).
STALE_PARTIAL_S = 3600
_swept: set[Path] = set()
#: How `os.link` says that the file system has no hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


def write_atomic(path: Path, data: bytes, overwrite: bool = True, *, durable: bool = False) -> None:
    """Write `path` so that readers see the old file or the new one, never a part. Without `overwrite` an
    existing `path`, even one that appears while this runs, is never replaced: FileExistsError. `durable`
    flushes the data to the disk before the rename, for files whose loss in a power cut costs more than the
    wait (the registry's state, an index)."""
    write_together({path: data}, overwrite, durable=durable)


def write_together(files: dict[Path, bytes], overwrite: bool = True, *, durable: bool = False) -> None:
    """Write several files as one: all or none of them (an interrupt, a full disk, a name taken meanwhile).

    Each is written to a temporary file beside it, then all are moved into place in order; when one cannot be,
    those already placed are undone: a file this call created is removed, a file it replaced is put back (from
    a hard link made before; where the file system has none, the new file stays). Only `kill -9` between two
    moves leaves the first files without the later ones.
    """
    staged: list[tuple[Path, Path]] = []
    placed: list[tuple[Path, Path | None]] = []  # each placed file, with the hard link to the file it replaced
    try:
        for path, data in files.items():
            _prepare(path.parent)
            staged.append((_temporary(path, data, durable), path))
        for tmp, path in staged:
            placed.append((path, _place(tmp, path, overwrite)))
    except BaseException:
        for path, old in reversed(placed):
            if old is None:
                path.unlink(missing_ok=True)
            else:
                os.replace(old, path)
        raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    for _, old in placed:
        if old is not None:
            old.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = True, *, durable: bool = False) -> Iterator[Path]:
    """A temporary file beside `path` (empty, with the permissions of a new file) for a writer that needs a name
    or a stream (a library's save function, a download): when the block ends without an error, what was written
    there becomes `path` as `write_atomic` places it; on an error it is removed and `path` is left as it was."""
    _prepare(path.parent)
    tmp = _temporary(path, b"", durable=False)
    try:
        yield tmp
        if durable:
            _flush(tmp)
        old = _place(tmp, path, overwrite)
        if old is not None:
            old.unlink(missing_ok=True)
    finally:
        tmp.unlink(missing_ok=True)  # without `overwrite` it is a second name of `path` by now


def _prepare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _sweep(folder)


def _partial_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.partial")


def _temporary(path: Path, data: bytes, durable: bool) -> Path:
    tmp = _partial_name(path)
    # Mode 0o666 less the umask, which the kernel applies: the permissions any new file gets (mkstemp's would be
    # private, 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _flush(path: Path) -> None:
    """Flush a file that something else wrote, by name (Windows flushes only a handle open for writing)."""
    fd = os.open(path, os.O_WRONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(tmp: Path, path: Path, overwrite: bool) -> Path | None:
    """Move `tmp` to `path`; returns a hard link to the file it replaced, if any."""
    if not overwrite:
        try:
            os.link(tmp, path)  # fails when `path` exists, however it got there: of two writers only one wins
        except OSError as err:
            if err.errno not in _NO_HARD_LINKS:
                raise
            # No hard links on this file system (FAT, some network shares): claim the name, then replace it.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            try:
                os.replace(tmp, path)
            except BaseException:
                path.unlink(missing_ok=True)
                raise
        return None  # the caller removes `tmp`, now a second name of `path`
    old = None
    if os.path.lexists(path):
        old = _partial_name(path)
        try:
            os.link(path, old, follow_symlinks=False)
        except (OSError, NotImplementedError):  # no hard links here: a failure later cannot put it back
            old = None
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            old.unlink(missing_ok=True)
        raise
    return old


def _sweep(folder: Path) -> None:
    """Remove the temporary files that killed writers left in `folder` (once per folder and process)."""
    if folder in _swept:
        return
    _swept.add(folder)
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _PARTIAL.fullmatch(entry.name)
        try:
            if match and entry.is_file(follow_symlinks=False) and (
                    not _running(int(match[1])) or now - entry.stat(follow_symlinks=False).st_mtime > STALE_PARTIAL_S):
                os.unlink(entry.path)
        except OSError:
            pass  # someone else's, or gone already: cleaning up is never worth failing a write


def _running(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would signal the process there; leave the age rule alone
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OverflowError:  # not a process id at all
        return False
    except PermissionError:  # another user's process
        return True
    return True
