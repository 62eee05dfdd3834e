"""The registry: every plugin that exists here (built in, pip-installed, installed from a folder or archive),
which version of each is active, what is enabled and what the user trusts.

Layout of the registry folder::

    state.json                               active version, enabled, trust, per plugin id; a change counter
    plugins/<namespace>/<name>/<version>/    installed copies, manifest beside the files
    index/                                   the search index (derived; rebuilt when missing or stale)
    .staging/                                installs in progress (cleaned up whatever happens)

Every install is staged, checked and then moved into place with one rename; `state.json` is replaced with one
rename too. A refused install leaves the folder exactly as it was.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version
from pydantic import BaseModel, Field

from registry.discover import DiscoverResult, PluginRecord, discover_entry_points, entry_point_signature
from registry.errors import InstallRefused, PluginNotFound, RegistryError
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
)
from registry.manifest import BUILTIN_NAMESPACE, DIFFPLUGIN_WEIGHTS, MANIFEST_FILE, PluginManifest, load_manifest

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
    trust: Trust | None = None


class RegistryState(BaseModel):
    generation: int = 0
    plugins: dict[str, PluginState] = Field(default_factory=dict)


@dataclass
class PluginStatus:
    """One plugin id as the user sees it: the active version, the others, and whether it can run."""

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

    def to_json(self) -> dict:
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


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _version_key(version: str) -> Version:
    return Version(version)


class Registry:
    """The single source of truth for which plugins exist. Reads manifests only; never imports plugin code."""

    def __init__(self, root: str | Path, models_dir: str | Path | None = None, entry_points: bool = True) -> None:
        self.root = Path(root)
        self.models_dir = Path(models_dir) if models_dir else None
        self.use_entry_points = entry_points
        self._discovered: list[DiscoverResult] | None = None
        self._entry_point_signature: str | None = None
        self._index = None

    # ------------------------------------------------------------------ state
    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def load_state(self) -> RegistryState:
        if not self.state_file.is_file():
            return RegistryState()
        try:
            return RegistryState.model_validate_json(self.state_file.read_text())
        except ValueError as err:
            raise RegistryError(f"{self.state_file}: damaged ({err}); move it away to start afresh") from None

    def _save_state(self, state: RegistryState) -> None:
        state.generation += 1
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.root)
        with os.fdopen(fd, "w") as f:
            f.write(state.model_dump_json(indent=2))
        os.replace(tmp, self.state_file)

    # ------------------------------------------------------------------ what exists
    def discovered(self) -> list[DiscoverResult]:
        if self._discovered is None:
            self._discovered = discover_entry_points() if self.use_entry_points else []
        return self._discovered

    def discovery_errors(self) -> list[str]:
        return [f"{d.origin}: {d.error}" for d in self.discovered() if d.error]

    def records(self) -> list[PluginRecord]:
        """Every version of every plugin: entry points (built-in and third-party), then installed folders."""
        found = [d.record for d in self.discovered() if d.record is not None]
        store = self.root / STORE_FOLDER
        for manifest_file in sorted(store.glob(f"*/*/*/{MANIFEST_FILE}")):
            try:
                found.append(PluginRecord(load_manifest(manifest_file), manifest_file.parent, "installed"))
            except RegistryError:
                continue  # a damaged installed copy shows up in `validate`, not as a crash of every command
        return found

    def plugins(self) -> list[PluginStatus]:
        state = self.load_state()
        by_id: dict[str, list[PluginRecord]] = {}
        for record in self.records():
            by_id.setdefault(record.id, []).append(record)
        return [self._status(pid, versions, state.plugins.get(pid, PluginState()))
                for pid, versions in sorted(by_id.items())]

    def get(self, plugin_id: str, version: str | None = None) -> PluginStatus:
        for status in self.plugins():
            if status.id == plugin_id:
                if version is not None and version != status.active.version:
                    record = self.record(plugin_id, version)
                    return PluginStatus(status.id, record, status.versions, status.enabled, status.trusted,
                                        status.trust, self._problems(record))
                return status
        known = ", ".join(s.id for s in self.plugins()[:10])
        raise PluginNotFound(f"no plugin '{plugin_id}' (known: {known or 'none'}); see `diffplugin plugins list`")

    def record(self, plugin_id: str, version: str) -> PluginRecord:
        for record in self.records():
            if record.id == plugin_id and record.version == version:
                return record
        raise PluginNotFound(f"plugin '{plugin_id}' has no version {version}")

    def _status(self, plugin_id: str, versions: list[PluginRecord], state: PluginState) -> PluginStatus:
        versions = sorted(versions, key=lambda r: _version_key(r.version))
        active = next((r for r in versions if r.version == state.active), versions[-1])
        builtin = active.builtin
        needs_trust = active.manifest.kind == "python" and not builtin
        trusted = not needs_trust or bool(state.trust and state.trust.granted)
        return PluginStatus(plugin_id, active, [r.version for r in versions], state.enabled, trusted, state.trust,
                            self._problems(active))

    def _problems(self, record: PluginRecord) -> list[str]:
        m = record.manifest
        if m.weights_source == "models-pull":
            folder = self.weights_folder(record)
            if not all((folder / w).is_file() for w in DIFFPLUGIN_WEIGHTS):
                return [f"weights not downloaded: run `diffplugin models pull --task {m.tasks[0]}`"]
        return []

    def weights_folder(self, record: PluginRecord) -> Path:
        """Where a plugin's weight files are (beside the manifest, or in the models folder for official ones)."""
        if record.manifest.weights_source == "models-pull":
            if self.models_dir is None:
                raise RegistryError("this registry was opened without a models folder")
            return self.models_dir / "plugins" / record.manifest.tasks[0]
        return record.folder

    # ------------------------------------------------------------------ checks shared by install and load
    def verify(self, record: PluginRecord) -> None:
        """Check every listed weight file: present, safetensors, SHA-256 as in the manifest."""
        folder = self.weights_folder(record)
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

    # ------------------------------------------------------------------ install
    def install(self, source: str | Path, trust: bool = False, limits: ArchiveLimits = ArchiveLimits()
                ) -> InstallResult:
        """Install a plugin folder or archive. Atomic: on any refusal the registry is exactly as before."""
        source = Path(source)
        if not source.exists():
            raise InstallRefused(source, "no such file or folder")
        staging = self.root / STAGING_FOLDER
        staging.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="install-", dir=staging))
        try:
            if is_archive(source):
                extracted = work / "extracted"
                extracted.mkdir()
                extract_archive(source, extracted, limits)
                staged = plugin_root(extracted, MANIFEST_FILE)
            elif source.is_dir():
                staged = work / "plugin"
                copy_tree(source, staged)
            else:
                raise InstallRefused(source, "not a plugin folder or a .zip / .tar.gz archive")
            manifest = load_manifest(staged)
            record = PluginRecord(manifest, staged, "installed")
            self._check_installable(record, trust)
            target = self.root / STORE_FOLDER / manifest.namespace / manifest.id.split("/")[1] / manifest.version
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
            before = self.signature()
            try:
                state = self.load_state()
                entry = state.plugins.setdefault(manifest.id, PluginState())
                entry.active, entry.enabled = manifest.version, True
                if manifest.kind == "python":
                    entry.trust = Trust(granted=True, at=_now(), how="install --trust")
                self._save_state(state)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                self._prune_empty(target.parent)
                raise
        except RegistryError as err:
            # Name the user's file, not the staging copy that was checked.
            message = str(err).replace(f"{work / 'extracted'}/", f"{source}:").replace(str(work / "extracted"),
                                                                                     str(source))
            err.args = (message.replace(str(work / "plugin"), str(source)),)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rmdir()
        self._sync_index(before, manifest.id)
        installed = PluginRecord(manifest, target, "installed")
        return InstallResult(installed, self._warnings(manifest))

    def _check_installable(self, record: PluginRecord, trust: bool) -> None:
        m, manifest_file = record.manifest, record.folder / MANIFEST_FILE
        if m.namespace == BUILTIN_NAMESPACE:
            raise InstallRefused(manifest_file, f"the namespace '{BUILTIN_NAMESPACE}/' is reserved for this "
                                                "project's built-in plugins", field="id")
        if m.weights_source != "folder":
            raise InstallRefused(manifest_file, "only built-in plugins may take their weights from "
                                                "`models pull`", field="weights_source")
        refuse_links(record.folder)
        refuse_pickles(record.folder)
        for extra in sorted(record.folder.rglob("*.safetensors")):
            check_safetensors(extra)
        if m.kind == "diffplugin":
            listed = {w.path for w in m.weights}
            for required in DIFFPLUGIN_WEIGHTS:
                if required not in listed:
                    raise InstallRefused(manifest_file, f"a diffplugin plugin must list {required}", field="weights")
            for config in ("tpb/config.json", "scb/config.json"):
                if not (record.folder / config).is_file():
                    raise InstallRefused(record.folder / config, "missing (the TPB and SCB configs sit beside "
                                                                 "their weights)")
        if m.kind == "python":
            module = m.python.entry_point.split(":")[0].split(".")[0]
            if not ((record.folder / f"{module}.py").is_file() or (record.folder / module / "__init__.py").is_file()):
                raise InstallRefused(manifest_file, f"module '{module}' is not in the plugin folder",
                                     field="python.entry_point")
            if not trust:
                raise InstallRefused(manifest_file, "python plugins run their own code on your machine; install "
                                                    "only if you trust the author, by passing --trust", field="kind")
        self.verify(record)
        for existing in self.records():
            if existing.id != m.id:
                continue
            if existing.source != "installed":
                raise InstallRefused(manifest_file, f"'{m.id}' is already provided by the package "
                                                    f"'{existing.distribution}'", field="id")
            if existing.version == m.version:
                raise InstallRefused(manifest_file, f"'{m.id}' {m.version} is already installed; remove it first "
                                                    "or raise the version", field="version")

    @staticmethod
    def _warnings(manifest: PluginManifest) -> list[str]:
        if manifest.non_commercial:
            return [f"{manifest.id}: licence {manifest.license} forbids commercial use"]
        return []

    def validate(self, source: str | Path) -> tuple[PluginManifest, list[str]]:
        """Every install check on a folder, without installing (trust is not required to validate)."""
        folder = Path(source)
        manifest = load_manifest(folder)
        if folder.is_file():
            folder = folder.parent
        self._check_installable(PluginRecord(manifest, folder, "installed"), trust=True)
        return manifest, self._warnings(manifest)

    # ------------------------------------------------------------------ changes
    def remove(self, plugin_id: str, version: str | None = None) -> list[str]:
        """Remove installed versions (all, or one); the active one moves to the newest left."""
        installed = [r for r in self.records() if r.id == plugin_id and r.source == "installed"]
        if not installed:
            other = [r for r in self.records() if r.id == plugin_id]
            if other:
                raise RegistryError(f"'{plugin_id}' comes from the package '{other[0].distribution}'; uninstall "
                                    "that package with pip, or disable the plugin")
            raise PluginNotFound(f"no installed plugin '{plugin_id}'")
        doomed = [r for r in installed if version is None or r.version == version]
        if not doomed:
            raise PluginNotFound(f"'{plugin_id}' has no installed version {version}")
        before = self.signature()
        state = self.load_state()
        left = sorted((r.version for r in installed if r not in doomed), key=_version_key)
        if left:
            entry = state.plugins.setdefault(plugin_id, PluginState())
            if entry.active not in left:
                entry.active = left[-1]
        else:
            state.plugins.pop(plugin_id, None)
        self._save_state(state)
        for record in doomed:
            shutil.rmtree(record.folder)
            self._prune_empty(record.folder.parent)
        self._sync_index(before, plugin_id)
        return [r.version for r in doomed]

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
        self.get(plugin_id, version)
        before = self.signature()
        state = self.load_state()
        entry = state.plugins.setdefault(plugin_id, PluginState())
        entry.enabled = True
        if version is not None:
            entry.active = version
        if trust:
            entry.trust = Trust(granted=True, at=_now(), how="enable --trust")
        self._save_state(state)
        self._sync_index(before, plugin_id)
        return self.get(plugin_id)

    def disable(self, plugin_id: str) -> PluginStatus:
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
        return f"{self.load_state().generation}|{self._entry_point_signature}"

    def index(self):
        from registry.index import SearchIndex

        if self._index is None:
            self._index = SearchIndex(self.root / INDEX_FOLDER)
        return self._index

    def _sync_index(self, before: str, plugin_id: str) -> None:
        """Carry one plugin's change into the search index when it is current; else it is rebuilt on next use."""
        status = next((s for s in self.plugins() if s.id == plugin_id), None)
        self.index().update(before, self.signature(), plugin_id,
                            status.manifest if status is not None and status.enabled else None)

    def searchable(self) -> list[PluginManifest]:
        return [s.manifest for s in self.plugins() if s.enabled]

    def search(self, text: str, limit: int = 5):
        """Plugins ranked by how well their description, tasks and examples match `text`."""
        index = self.index()
        index.ensure(self.signature(), self.searchable)
        return index.search(text, limit)

    def reindex(self, progress=None) -> int:
        """Rebuild the search index from the manifests; returns the number of plugins indexed.
        `progress(done, total)` follows the embedding of the texts."""
        manifests = self.searchable()
        self.index().rebuild(manifests, self.signature(), progress)
        return len(manifests)
