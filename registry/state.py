"""The registry folder's own bookkeeping: `state.json` (active version, enabled, trust per plugin id), the lock that
lets one change at a time through, and the staging area that changes are prepared in.

`state.json` is replaced with one rename (`plugins.atomic_files.write_atomic`), so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one registry command at a time
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before every lock

from pydantic import BaseModel, Field

from plugins.atomic_files import write_atomic
from registry.discover import PluginRecord
from registry.errors import RegistryError, RegistryWriteError

STATE_FILE = "state.json"
STORE_FOLDER = "plugins"
INDEX_FOLDER = "index"
STAGING_FOLDER = ".staging"


class Trust(BaseModel):
    granted: bool
    at: str = Field(description="UTC time of the decision.")
    how: str = Field(description="e.g. 'install --trust' or 'enable --trust'.")


class PluginState(BaseModel):
    active: str | None = None
    enabled: bool = True
    trust: dict[str, Trust] = Field(default_factory=dict,
                                    description="Per '<version> <source>': trust covers the code the user saw.")


class RegistryState(BaseModel):
    generation: int = Field(0, description="Counts the changes made to this registry.")
    plugins: dict[str, PluginState] = Field(default_factory=dict)


def trust_key(record: PluginRecord) -> str:
    """Trust covers one version from one source: the code the user saw."""
    return f"{record.version} {record.source}"


def write_error(err: OSError, root: Path) -> RegistryWriteError:
    """A file system refusal (read-only, disk full, a folder where a file should be) as one line."""
    where = err.filename or root
    return RegistryWriteError(f"{where}: cannot write ({err.strerror or err}); the registry {root} was left as it was")


class FolderState:
    """The state file, lock and staging area of one registry folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def file(self) -> Path:
        return self.root / STATE_FILE

    @property
    def store(self) -> Path:
        """Where installed copies live: <namespace>/<name>/<version>/."""
        return self.root / STORE_FOLDER

    def load(self) -> RegistryState:
        if not self.file.exists():
            return RegistryState()
        try:
            return RegistryState.model_validate_json(self.file.read_bytes())
        except (ValueError, OSError) as err:  # OSError: e.g. a folder in its place; trust must not reset silently
            reason = err.strerror if isinstance(err, OSError) else err
            raise RegistryError(f"{self.file}: damaged ({reason}); move it away to start afresh") from None

    def save(self, state: RegistryState) -> None:
        state.generation += 1
        write_atomic(self.file, state.model_dump_json(indent=2).encode(), durable=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One change at a time across processes (two installs must not both rewrite state.json). A file system
        refusal inside (read-only, disk full) becomes one line; each change has undone its part by then."""
        try:
            handle = self._lock()
        except OSError as err:
            raise write_error(err, self.root) from None
        try:
            self._clean_staging()
            yield
        except RegistryWriteError:
            raise
        except OSError as err:
            raise write_error(err, self.root) from None
        finally:
            if handle is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
                os.close(handle)

    def _lock(self, wait: bool = True) -> int | None:
        """The registry folder, opened and locked; None where there are no locks, or when another process holds
        the lock and `wait` is False."""
        while True:
            self.root.mkdir(parents=True, exist_ok=True)
            if fcntl is None:
                return None
            handle = os.open(self.root, os.O_RDONLY)  # the folder itself: no lock file to leave behind
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                return None
            # A refused install into a new registry removes the folder again: a lock on a folder removed while
            # this process waited would guard nothing, so lock the folder now at that path instead.
            try:
                here = os.stat(self.root)
                locked = os.fstat(handle)
                if (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino):
                    return handle
            except FileNotFoundError:
                pass
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)

    def _clean_staging(self) -> None:
        """Remove what a killed install or remove left in .staging. Only the lock holder stages, so nothing there
        is in use (without locks, as on Windows, nothing is removed)."""
        staging = self.root / STAGING_FOLDER
        if fcntl is None or not staging.is_dir():
            return
        for leftover in staging.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staging.rmdir()

    def tidy(self) -> None:
        """Clean up after a killed install at once when no change is under way (else the next change does)."""
        if not (self.root / STAGING_FOLDER).is_dir():
            return
        with contextlib.suppress(OSError):
            handle = self._lock(wait=False)
            if handle is None:
                return
            try:
                self._clean_staging()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                os.close(handle)

    def staging(self) -> Path:
        """The staging folder, created; only the lock holder may use it."""
        staging = self.root / STAGING_FOLDER
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def remove_if_empty(self) -> None:
        """Undo the folders a refused install created in a registry that did not exist: empty ones only, so a
        concurrent install's files are never touched."""
        for folder in (self.root / STAGING_FOLDER, self.store, self.root):
            with contextlib.suppress(OSError):
                folder.rmdir()

    def prune_empty(self, folder: Path) -> None:
        """Remove empty <namespace>/<name> folders left behind, up to the store itself."""
        store = self.store
        while folder != store and folder.is_relative_to(store):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent
