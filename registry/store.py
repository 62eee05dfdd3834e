"""The registry: every plugin that exists here (built in, pip-installed, installed from a folder or archive),
which version of each is active, what is enabled and what the user trusts.

Layout of the registry folder::

    state.json                               active version, enabled, trust, per plugin id; a change counter
    plugins/<namespace>/<name>/<version>/    installed copies, manifest beside the files
    index/                                   the search index (derived; rebuilt when missing or stale)
    selector-examples.safetensors            the selector's embeddings of the plugins' examples (derived)
    .staging/                                installs in progress (cleaned up whatever happens, and by the next
                                             change after a killed one)

Every install is staged, checked and then moved into place with one rename; `state.json` is replaced with one
rename too. A refused install leaves the folder exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one registry command at a time
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before every lock

from packaging.version import Version
from pydantic import BaseModel, Field

from plugins.atomic_files import write_atomic
from plugins.errors import BadInput
from plugins.progress import Progress
from registry.discover import DiscoverResult, PluginRecord, discover_entry_points, entry_point_signature
from registry.errors import InstallRefused, PluginNotFound, RegistryError, RegistryWriteError
from registry.files import (
    ArchiveLimits,
    check_safetensors,
    copy_tree,
    extract_archive,
    is_archive,
    plugin_root,
    refuse_links,
    refuse_pickles,
    sha256_file,
    utc_now,
)
from registry.kinds import kind_for
from registry.manifest import (
    MANIFEST_FILE,
    PluginManifest,
    load_manifest,
    reserved_lookalike,
)

if TYPE_CHECKING:  # imported on first search: most commands never search
    from registry.index import SearchHit, SearchIndex

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


@dataclass
class PluginStatus:
    """One plugin id as the user sees it: the chosen version, the others, and whether it can run."""

    id: str
    active: PluginRecord
    versions: list[str]
    enabled: bool
    trusted: bool
    trust: Trust | None
    problems: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> PluginManifest:
        return self.active.manifest

    @property
    def runnable(self) -> bool:
        return self.enabled and self.trusted and not self.problems

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id, "version": m.version, "versions": self.versions, "name": m.name, "kind": m.kind,
            "tasks": m.tasks, "source": self.active.source, "enabled": self.enabled, "trusted": self.trusted,
            "trust": self.trust.model_dump() if self.trust else None, "license": m.license,
            "non_commercial": m.non_commercial, "runnable": self.runnable, "problems": self.problems,
            "folder": str(self.active.folder),
        }


@dataclass
class InstallResult:
    record: PluginRecord
    warnings: list[str]
    #: Per task of the new plugin, the other enabled plugins that served it before: requests for that task may now
    #: get the new plugin instead, which the user must be told (`notes`).
    takes_over: dict[str, list[str]] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """One line per task the new plugin may now take over, with the way back."""
        return [f"{task}: {self.record.id} may now be used instead of {', '.join(others)}; "
                f"`diffplugin plugins disable {self.record.id}` to go back" for task, others in self.takes_over.items()]


def _user_paths(message: str, work: Path, source: Path) -> str:
    """Rewrite staging paths in a message as the user's own paths (`archive.zip:member` for archives)."""
    if source.name == MANIFEST_FILE:
        source = source.parent
    for staged in sorted(work.rglob("*"), key=lambda p: len(str(p)), reverse=True):
        if staged.is_dir() and (staged / MANIFEST_FILE).is_file() and str(staged) in message:
            replacement = f"{source}:" if is_archive(source) else f"{source}/"
            message = message.replace(f"{staged}/", replacement).replace(str(staged), str(source))
    return message.replace(str(work), str(source))


def _write_error(err: OSError, root: Path) -> RegistryWriteError:
    """A file system refusal (read-only, disk full, a folder where a file should be) as one line."""
    where = err.filename or root
    return RegistryWriteError(f"{where}: cannot write ({err.strerror or err}); the registry {root} was left as it was")


def _trust_key(record: PluginRecord) -> str:
    return f"{record.version} {record.source}"


def verify_weights(record: PluginRecord, folder: Path) -> None:
    """Check every weight file `record` lists, in `folder`: present, safetensors, SHA-256 as in the manifest."""
    for i, weight in enumerate(record.manifest.weights):
        path = folder / weight.path
        if not path.is_file():
            raise InstallRefused(record.folder / MANIFEST_FILE, f"lists {weight.path}, which is missing",
                                 field=f"weights.{i}.path")
        check_safetensors(path)
        actual = sha256_file(path)
        if actual != weight.sha256:
            raise InstallRefused(path, f"SHA-256 mismatch: the manifest says {weight.sha256}, the file is "
                                       f"{actual}; the file is damaged or was changed", field=f"weights.{i}.sha256")


class Registry:
    """The single source of truth for which plugins exist. Reads manifests only; never imports plugin code."""

    def __init__(self, root: str | Path, models_dir: str | Path | None = None, entry_points: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.models_dir = Path(models_dir).expanduser() if models_dir else None
        self.use_entry_points = entry_points
        self._discovered: list[DiscoverResult] | None = None
        self._entry_point_signature: str | None = None
        self._damaged: list[str] = []
        self._index: SearchIndex | None = None

    # ------------------------------------------------------------------ state
    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def load_state(self) -> RegistryState:
        if not self.state_file.exists():
            return RegistryState()
        try:
            return RegistryState.model_validate_json(self.state_file.read_bytes())
        except (ValueError, OSError) as err:  # OSError: e.g. a folder in its place; trust must not reset silently
            reason = err.strerror if isinstance(err, OSError) else err
            raise RegistryError(f"{self.state_file}: damaged ({reason}); move it away to start afresh") from None

    def _save_state(self, state: RegistryState) -> None:
        state.generation += 1
        write_atomic(self.state_file, state.model_dump_json(indent=2).encode(), durable=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time across processes (two installs must not both rewrite state.json). A file system
        refusal inside (read-only, disk full) becomes one line; each change has undone its part by then."""
        try:
            handle = self._lock()
        except OSError as err:
            raise _write_error(err, self.root) from None
        try:
            self._clean_staging()
            yield
        except RegistryWriteError:
            raise
        except OSError as err:
            raise _write_error(err, self.root) from None
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

    def _tidy(self) -> None:
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

    def _remove_if_empty(self) -> None:
        """Undo the folders a refused install created in a registry that did not exist: empty ones only, so a
        concurrent install's files are never touched."""
        for folder in (self.root / STAGING_FOLDER, self.root / STORE_FOLDER, self.root):
            with contextlib.suppress(OSError):
                folder.rmdir()

    # ------------------------------------------------------------------ what exists
    def discovered(self) -> list[DiscoverResult]:
        if self._discovered is None:
            self._discovered = discover_entry_points() if self.use_entry_points else []
        return self._discovered

    def discovery_errors(self) -> list[str]:
        self.records()
        return [f"{d.origin}: {d.error}" for d in self.discovered() if d.error] + self._damaged

    def records(self) -> list[PluginRecord]:
        """Every version of every plugin: entry points (built-in and third-party), then installed folders."""
        found = [d.record for d in self.discovered() if d.record is not None]
        self._damaged = []
        store = self.root / STORE_FOLDER
        for manifest_file in sorted(store.glob(f"*/*/*/{MANIFEST_FILE}")):
            try:
                found.append(PluginRecord(load_manifest(manifest_file), manifest_file.parent, "installed"))
            except RegistryError as err:  # reported by `plugins list`, not a crash of every command
                self._damaged.append(f"installed copy damaged: {err}")
        return found

    def plugins(self) -> list[PluginStatus]:
        self._tidy()
        state = self.load_state()
        by_id: dict[str, list[PluginRecord]] = {}
        for record in self.records():
            by_id.setdefault(record.id, []).append(record)
        return [self._status(versions, state.plugins.get(pid, PluginState()))
                for pid, versions in sorted(by_id.items())]

    def get(self, plugin_id: str, version: str | None = None) -> PluginStatus:
        """The plugin's status for its active version, or for `version` (trust is judged for that version)."""
        versions = [r for r in self.records() if r.id == plugin_id]
        if not versions:
            known = ", ".join(s.id for s in self.plugins()[:10])
            raise PluginNotFound(f"no plugin '{plugin_id}' (known: {known or 'none'}); see `diffplugin plugins list`")
        chosen = None
        if version is not None:
            chosen = next((r for r in versions if Version(r.version) == Version(version)), None)
            if chosen is None:
                raise PluginNotFound(f"plugin '{plugin_id}' has no version {version} (it has: "
                                     f"{', '.join(r.version for r in versions)})")
        return self._status(versions, self.load_state().plugins.get(plugin_id, PluginState()), chosen)

    def _status(self, versions: list[PluginRecord], state: PluginState,
                chosen: PluginRecord | None = None) -> PluginStatus:
        versions = sorted(versions, key=lambda r: (Version(r.version), r.source))
        active = chosen or next((r for r in versions if r.version == state.active), versions[-1])
        trust = state.trust.get(_trust_key(active))
        needs_trust = kind_for(active.manifest).runs_code and not active.builtin
        trusted = not needs_trust or bool(trust and trust.granted)
        return PluginStatus(active.id, active, [r.version for r in versions], state.enabled, trusted, trust,
                            self._problems(active))

    def _problems(self, record: PluginRecord) -> list[str]:
        m = record.manifest
        if m.weights_source == "models-pull":
            if self.models_dir is None:
                return ["this registry was opened without a models folder, so the weights cannot be found"]
            return kind_for(m).pulled_problems(m, self.models_dir)
        return []

    def weights_folder(self, record: PluginRecord) -> Path:
        """Where a plugin's weight files are (beside the manifest, or in the models folder for official ones)."""
        if record.manifest.weights_source == "models-pull":
            if self.models_dir is None:
                raise RegistryError("this registry was opened without a models folder")
            return kind_for(record.manifest).pulled_folder(record.manifest, self.models_dir)
        return record.folder

    # ------------------------------------------------------------------ checks shared by install and load
    def verify(self, record: PluginRecord) -> None:
        """Check every listed weight file: present, safetensors, SHA-256 as in the manifest."""
        verify_weights(record, self.weights_folder(record))

    # ------------------------------------------------------------------ install
    def install(self, source: str | Path, trust: bool = False, limits: ArchiveLimits = ArchiveLimits()
                ) -> InstallResult:
        """Install a plugin folder or archive; it becomes the active version of its id.

        Atomic: on any refusal or failure the registry folder is exactly as before (a registry folder created
        for this install is removed again)."""
        source = Path(source).expanduser()
        if not source.exists():
            raise InstallRefused(source, "no such file or folder")
        if source.is_dir() and self.root.resolve().is_relative_to(source.resolve()):
            raise InstallRefused(source, "the plugin folder contains the registry folder; install from elsewhere")
        existed = self.root.exists()
        with self._locked():
            try:
                record, takes_over = self._install_locked(source, trust, limits)
            except BaseException:
                if not existed:
                    self._remove_if_empty()
                raise
        return InstallResult(record, self._warnings(record.manifest), takes_over)

    def _install_locked(self, source: Path, trust: bool, limits: ArchiveLimits
                        ) -> tuple[PluginRecord, dict[str, list[str]]]:
        staging = self._staging()
        work = Path(tempfile.mkdtemp(prefix="install-", dir=staging))
        try:
            staged = self._stage(source, work, limits)
            manifest = load_manifest(staged)
            self._check_files(PluginRecord(manifest, staged, "installed"), trust)
            self._check_conflicts(manifest, staged)
            takes_over = self.served_by_others(manifest)
            before = self.signature()
            target = self.root / STORE_FOLDER / manifest.namespace / manifest.id.split("/")[1] / manifest.version
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
            record = PluginRecord(manifest, target, "installed")
            try:
                state = self.load_state()
                entry = state.plugins.setdefault(manifest.id, PluginState())
                entry.active, entry.enabled = manifest.version, True
                if kind_for(manifest).runs_code:
                    entry.trust[_trust_key(record)] = Trust(granted=True, at=utc_now(), how="install --trust")
                self._save_state(state)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                self._prune_empty(target.parent)
                raise
        except RegistryError as err:
            err.args = (_user_paths(str(err), work, source),)  # name the user's file, not the staging copy
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rmdir()
        self._sync_index(before, manifest.id)
        return record, takes_over

    def served_by_others(self, manifest: PluginManifest) -> dict[str, list[str]]:
        """Per task of `manifest`, the other enabled plugins serving it now: what installing it may take over (the
        chat asks before, an install reports it in `InstallResult.takes_over`)."""
        enabled = [s for s in self.plugins() if s.enabled and s.id != manifest.id]
        found = {task: [s.id for s in enabled if task in s.manifest.tasks] for task in manifest.tasks}
        return {task: ids for task, ids in found.items() if ids}

    @staticmethod
    def _stage(source: Path, work: Path, limits: ArchiveLimits) -> Path:
        if is_archive(source):
            extracted = work / "extracted"
            extracted.mkdir()
            extract_archive(source, extracted, limits)
            return plugin_root(extracted, MANIFEST_FILE)
        if source.is_dir():
            staged = work / "plugin"
            copy_tree(source, staged)
            return staged
        if source.name == MANIFEST_FILE:
            return Registry._stage(source.parent, work, limits)
        raise InstallRefused(source, "not a plugin folder or a .zip / .tar.gz archive")

    def _check_files(self, record: PluginRecord, trust: bool) -> None:
        """What an install checks about the plugin itself (the staged copy, so nothing can change after)."""
        m, manifest_file = record.manifest, record.folder / MANIFEST_FILE
        if reserved := reserved_lookalike(m.namespace):
            raise InstallRefused(manifest_file, f"the namespace '{m.namespace}/' is, or looks like, '{reserved}/', "
                                                "which is reserved for this project's built-in plugins; publish "
                                                "under a namespace of your own", field="id")
        if m.weights_source != "folder":
            raise InstallRefused(manifest_file, "only built-in plugins may take their weights from "
                                                "`models pull`", field="weights_source")
        refuse_links(record.folder)
        refuse_pickles(record.folder)
        for extra in sorted(record.folder.rglob("*.safetensors")):
            check_safetensors(extra)
        kind = kind_for(m)
        kind.check_files(m, record.folder)
        if kind.runs_code and not trust:
            raise InstallRefused(manifest_file, f"{kind.name} plugins run their own code on your machine; install "
                                                "only if you trust the author, by passing --trust", field="kind")
        self.verify(record)

    def _check_conflicts(self, manifest: PluginManifest, folder: Path) -> None:
        for existing in self.records():
            if existing.id != manifest.id:
                continue
            if existing.source != "installed":
                raise InstallRefused(folder / MANIFEST_FILE, f"'{manifest.id}' is already provided by the package "
                                                             f"'{existing.distribution}'", field="id")
            if Version(existing.version) == Version(manifest.version):
                raise InstallRefused(folder / MANIFEST_FILE, f"'{manifest.id}' {existing.version} is already "
                                                             "installed; remove it first or raise the version",
                                     field="version")

    @staticmethod
    def _warnings(manifest: PluginManifest) -> list[str]:
        if manifest.non_commercial:
            return [f"{manifest.id}: licence {manifest.license} forbids commercial use"]
        return []

    def validate(self, source: str | Path) -> tuple[PluginManifest, list[str]]:
        """Every check an install makes on the plugin itself (folder or archive), without installing it.
        Trust is not required to validate, and an installed copy of the same version is no error."""
        source = Path(source).expanduser()
        if not source.exists():
            raise InstallRefused(source, "no such file or folder")
        with tempfile.TemporaryDirectory(prefix="diffplugin-validate-") as tmp:
            try:
                staged = self._stage(source, Path(tmp), ArchiveLimits())
                manifest = load_manifest(staged)
                self._check_files(PluginRecord(manifest, staged, "installed"), trust=True)
            except RegistryError as err:
                err.args = (_user_paths(str(err), Path(tmp), source),)
                raise
        return manifest, self._warnings(manifest)

    # ------------------------------------------------------------------ changes
    def remove(self, plugin_id: str, version: str | None = None) -> list[str]:
        """Remove installed versions (all, or one); the active one moves to the newest left."""
        with self._locked():
            records = [r for r in self.records() if r.id == plugin_id]
            installed = [r for r in records if r.source == "installed"]
            if not installed:
                if records:
                    raise RegistryError(f"'{plugin_id}' comes from the package '{records[0].distribution}'; "
                                        "uninstall that package with pip, or disable the plugin")
                raise PluginNotFound(f"no installed plugin '{plugin_id}'")
            doomed = [r for r in installed if version is None or Version(r.version) == Version(version)]
            if not doomed:
                raise PluginNotFound(f"'{plugin_id}' has no installed version {version}")
            before = self.signature()
            # Move the versions out of the store first (one rename each), so a failure part-way through a delete
            # can never leave a half-deleted version that still lists.
            trash = Path(tempfile.mkdtemp(prefix="remove-", dir=self._staging()))
            moved = []
            try:
                for k, record in enumerate(doomed):
                    record.folder.rename(trash / str(k))
                    moved.append(record)
                state = self.load_state()
                left = [r for r in records if r not in doomed]
                entry = state.plugins.get(plugin_id)
                if entry is not None:
                    for record in doomed:
                        entry.trust.pop(_trust_key(record), None)
                    if not left:
                        state.plugins.pop(plugin_id)
                    elif entry.active not in [r.version for r in left]:
                        entry.active = max(left, key=lambda r: Version(r.version)).version
                self._save_state(state)
            except BaseException:
                for k, record in enumerate(moved):
                    (trash / str(k)).rename(record.folder)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
                with contextlib.suppress(OSError):
                    trash.parent.rmdir()
            for record in doomed:
                self._prune_empty(record.folder.parent)
            self._sync_index(before, plugin_id)
        return [r.version for r in doomed]

    def _staging(self) -> Path:
        staging = self.root / STAGING_FOLDER
        staging.mkdir(parents=True, exist_ok=True)
        return staging

    def _prune_empty(self, folder: Path) -> None:
        """Remove empty <namespace>/<name> folders left behind, up to the store itself."""
        store = self.root / STORE_FOLDER
        while folder != store and folder.is_relative_to(store):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def enable(self, plugin_id: str, version: str | None = None, trust: bool = False) -> PluginStatus:
        """Enable a plugin; with `version`, make that version active; with `trust`, trust its code (that
        version, from that source)."""
        with self._locked():
            status = self.get(plugin_id, version)
            before = self.signature()
            state = self.load_state()
            entry = state.plugins.setdefault(plugin_id, PluginState())
            entry.enabled = True
            if version is not None:
                entry.active = status.active.version
            if trust:
                entry.trust[_trust_key(status.active)] = Trust(granted=True, at=utc_now(), how="enable --trust")
            self._save_state(state)
            self._sync_index(before, plugin_id)
        return self.get(plugin_id, version)

    def disable(self, plugin_id: str) -> PluginStatus:
        with self._locked():
            self.get(plugin_id)
            before = self.signature()
            state = self.load_state()
            state.plugins.setdefault(plugin_id, PluginState()).enabled = False
            self._save_state(state)
            self._sync_index(before, plugin_id)
        return self.get(plugin_id)

    # ------------------------------------------------------------------ search
    def signature(self) -> str:
        """Changes whenever the set of searchable plugins may have changed: a registry change, or packages with
        plugins installed or upgraded (read once per Registry object; scanning every distribution is slow)."""
        if self._entry_point_signature is None:
            self._entry_point_signature = entry_point_signature() if self.use_entry_points else ""
        try:  # every change replaces state.json (a new inode): its stat is a change marker that costs microseconds
            info = self.state_file.stat()
            marker = f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"
        except FileNotFoundError:
            marker = "no-state"
        return f"{marker}|{self._entry_point_signature}"

    def index(self) -> SearchIndex:
        from registry.index import SearchIndex

        if self._index is None:
            self._index = SearchIndex(self.root / INDEX_FOLDER)
        return self._index

    def _sync_index(self, before: str, plugin_id: str) -> None:
        """Carry one plugin's change into the search index when it is current; else it is rebuilt on next use."""
        status = next((s for s in self.plugins() if s.id == plugin_id), None)
        # The change is made by now: an index folder that cannot be written only stays stale (its signature no
        # longer matches), and the next search rebuilds it or says why it cannot.
        with contextlib.suppress(OSError):
            self.index().update(before, self.signature(), plugin_id,
                                status.manifest if status is not None and status.enabled else None)

    def searchable(self) -> list[PluginManifest]:
        return [s.manifest for s in self.plugins() if s.enabled]

    def search(self, text: str, limit: int = 5) -> list[SearchHit]:
        """Plugins ranked by how well their description, tasks and examples match `text`."""
        if not text.strip():
            raise BadInput("search text is empty")
        index = self.index()
        index.ensure(self.signature(), self.searchable)
        try:
            return index.search(text, limit)
        except Exception:
            index.rebuild(self.searchable(), self.signature())
            return index.search(text, limit)

    def reindex(self, progress: Progress | None = None) -> int:
        """Rebuild the search index from the manifests; returns the number of plugins indexed.
        `progress` follows the embedding of the texts ('embed' events)."""
        manifests = self.searchable()
        self.index().rebuild(manifests, self.signature(), progress)
        return len(manifests)
