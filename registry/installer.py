"""Changes to a registry: install (staged, checked, moved into place with one rename), remove, enable and disable,
and the trust each asks for. A refused install leaves the registry folder exactly as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from registry.catalogue import Catalogue, PluginStatus
from registry.discover import PluginRecord
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
    utc_now,
)
from registry.kinds import kind_for
from registry.manifest import MANIFEST_FILE, PluginManifest, load_manifest, reserved_lookalike
from registry.state import FolderState, PluginState, Trust, trust_key


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


def _warnings(manifest: PluginManifest) -> list[str]:
    if manifest.non_commercial:
        return [f"{manifest.id}: licence {manifest.license} forbids commercial use"]
    return []


def _stage(source: Path, work: Path, limits: ArchiveLimits) -> Path:
    """A private copy of the plugin in `work` (archives extracted), so nothing can change after the checks."""
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
        return _stage(source.parent, work, limits)
    raise InstallRefused(source, "not a plugin folder or a .zip / .tar.gz archive")


class Installer:
    """Every change to a registry folder: each under the folder's lock, each carried into the search index."""

    def __init__(self, state: FolderState, catalogue: Catalogue) -> None:
        self.state = state
        self.catalogue = catalogue

    # ------------------------------------------------------------------ install
    def install(self, source: str | Path, trust: bool = False, limits: ArchiveLimits = ArchiveLimits()
                ) -> InstallResult:
        """Install a plugin folder or archive; it becomes the active version of its id.

        Atomic: on any refusal or failure the registry folder is exactly as before (a registry folder created
        for this install is removed again)."""
        source = Path(source).expanduser()
        root = self.state.root
        if not source.exists():
            raise InstallRefused(source, "no such file or folder")
        if source.is_dir() and root.resolve().is_relative_to(source.resolve()):
            raise InstallRefused(source, "the plugin folder contains the registry folder; install from elsewhere")
        existed = root.exists()
        with self.state.locked():
            try:
                record, takes_over = self._install_locked(source, trust, limits)
            except BaseException:
                if not existed:
                    self.state.remove_if_empty()
                raise
        return InstallResult(record, _warnings(record.manifest), takes_over)

    def _install_locked(self, source: Path, trust: bool, limits: ArchiveLimits
                        ) -> tuple[PluginRecord, dict[str, list[str]]]:
        staging = self.state.staging()
        work = Path(tempfile.mkdtemp(prefix="install-", dir=staging))
        try:
            staged = _stage(source, work, limits)
            manifest = load_manifest(staged)
            self.check_files(PluginRecord(manifest, staged, "installed"), trust)
            self._check_conflicts(manifest, staged)
            takes_over = self.catalogue.served_by_others(manifest)
            before = self.catalogue.signature()
            target = self.state.store / manifest.namespace / manifest.id.split("/")[1] / manifest.version
            target.parent.mkdir(parents=True, exist_ok=True)
            staged.rename(target)
            record = PluginRecord(manifest, target, "installed")
            try:
                state = self.state.load()
                entry = state.plugins.setdefault(manifest.id, PluginState())
                entry.active, entry.enabled = manifest.version, True
                if kind_for(manifest).runs_code:
                    entry.trust[trust_key(record)] = Trust(granted=True, at=utc_now(), how="install --trust")
                self.state.save(state)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                self.state.prune_empty(target.parent)
                raise
        except RegistryError as err:
            err.args = (_user_paths(str(err), work, source),)  # name the user's file, not the staging copy
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rmdir()
        self.catalogue.sync_index(before, manifest.id)
        return record, takes_over

    def check_files(self, record: PluginRecord, trust: bool) -> None:
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
        self.catalogue.verify(record)

    def _check_conflicts(self, manifest: PluginManifest, folder: Path) -> None:
        for existing in self.catalogue.records():
            if existing.id != manifest.id:
                continue
            if existing.source != "installed":
                raise InstallRefused(folder / MANIFEST_FILE, f"'{manifest.id}' is already provided by the package "
                                                             f"'{existing.distribution}'", field="id")
            if Version(existing.version) == Version(manifest.version):
                raise InstallRefused(folder / MANIFEST_FILE, f"'{manifest.id}' {existing.version} is already "
                                                             "installed; remove it first or raise the version",
                                     field="version")

    def validate(self, source: str | Path) -> tuple[PluginManifest, list[str]]:
        """Every check an install makes on the plugin itself (folder or archive), without installing it.
        Trust is not required to validate, and an installed copy of the same version is no error."""
        source = Path(source).expanduser()
        if not source.exists():
            raise InstallRefused(source, "no such file or folder")
        with tempfile.TemporaryDirectory(prefix="diffplugin-validate-") as tmp:
            try:
                staged = _stage(source, Path(tmp), ArchiveLimits())
                manifest = load_manifest(staged)
                self.check_files(PluginRecord(manifest, staged, "installed"), trust=True)
            except RegistryError as err:
                err.args = (_user_paths(str(err), Path(tmp), source),)
                raise
        return manifest, _warnings(manifest)

    # ------------------------------------------------------------------ other changes
    def remove(self, plugin_id: str, version: str | None = None) -> list[str]:
        """Remove installed versions (all, or one); the active one moves to the newest left."""
        with self.state.locked():
            records = [r for r in self.catalogue.records() if r.id == plugin_id]
            installed = [r for r in records if r.source == "installed"]
            if not installed:
                if records:
                    raise RegistryError(f"'{plugin_id}' comes from the package '{records[0].distribution}'; "
                                        "uninstall that package with pip, or disable the plugin")
                raise PluginNotFound(f"no installed plugin '{plugin_id}'")
            doomed = [r for r in installed if version is None or Version(r.version) == Version(version)]
            if not doomed:
                raise PluginNotFound(f"'{plugin_id}' has no installed version {version}")
            before = self.catalogue.signature()
            # Move the versions out of the store first (one rename each), so a failure part-way through a delete
            # can never leave a half-deleted version that still lists.
            trash = Path(tempfile.mkdtemp(prefix="remove-", dir=self.state.staging()))
            moved = []
            try:
                for k, record in enumerate(doomed):
                    record.folder.rename(trash / str(k))
                    moved.append(record)
                state = self.state.load()
                left = [r for r in records if r not in doomed]
                entry = state.plugins.get(plugin_id)
                if entry is not None:
                    for record in doomed:
                        entry.trust.pop(trust_key(record), None)
                    if not left:
                        state.plugins.pop(plugin_id)
                    elif entry.active not in [r.version for r in left]:
                        entry.active = max(left, key=lambda r: Version(r.version)).version
                self.state.save(state)
            except BaseException:
                for k, record in enumerate(moved):
                    (trash / str(k)).rename(record.folder)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
                with contextlib.suppress(OSError):
                    trash.parent.rmdir()
            for record in doomed:
                self.state.prune_empty(record.folder.parent)
            self.catalogue.sync_index(before, plugin_id)
        return [r.version for r in doomed]

    def enable(self, plugin_id: str, version: str | None = None, trust: bool = False) -> PluginStatus:
        """Enable a plugin; with `version`, make that version active; with `trust`, trust its code (that
        version, from that source)."""
        with self.state.locked():
            status = self.catalogue.get(plugin_id, version)
            before = self.catalogue.signature()
            state = self.state.load()
            entry = state.plugins.setdefault(plugin_id, PluginState())
            entry.enabled = True
            if version is not None:
                entry.active = status.active.version
            if trust:
                entry.trust[trust_key(status.active)] = Trust(granted=True, at=utc_now(), how="enable --trust")
            self.state.save(state)
            self.catalogue.sync_index(before, plugin_id)
        return self.catalogue.get(plugin_id, version)

    def disable(self, plugin_id: str) -> PluginStatus:
        with self.state.locked():
            self.catalogue.get(plugin_id)
            before = self.catalogue.signature()
            state = self.state.load()
            state.plugins.setdefault(plugin_id, PluginState()).enabled = False
            self.state.save(state)
            self.catalogue.sync_index(before, plugin_id)
        return self.catalogue.get(plugin_id)
