"""What exists in a registry: every plugin found (built in, pip-installed, installed in the folder), each id's status
(active version, enabled, trusted, runnable), where its weights are, and the search over the enabled ones.

Reads manifests only; never imports plugin code.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from plugins.errors import BadInput
from plugins.progress import Progress
from registry.discover import DiscoverResult, PluginRecord, discover_entry_points, entry_point_signature
from registry.errors import InstallRefused, PluginNotFound, RegistryError
from registry.files import check_safetensors, sha256_file
from registry.kinds import kind_for
from registry.manifest import MANIFEST_FILE, PluginManifest, load_manifest
from registry.state import INDEX_FOLDER, FolderState, PluginState, Trust, trust_key

if TYPE_CHECKING:  # imported on first search: most commands never search
    from registry.index import SearchHit, SearchIndex


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


class Catalogue:
    """The plugins a registry knows, as the user sees them, and the search over them."""

    def __init__(self, state: FolderState, models_dir: Path | None, entry_points: bool) -> None:
        self.state = state
        self.models_dir = models_dir
        self.use_entry_points = entry_points
        self._discovered: list[DiscoverResult] | None = None
        self._entry_point_signature: str | None = None
        self._damaged: list[str] = []
        self._index: SearchIndex | None = None

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
        for manifest_file in sorted(self.state.store.glob(f"*/*/*/{MANIFEST_FILE}")):
            try:
                found.append(PluginRecord(load_manifest(manifest_file), manifest_file.parent, "installed"))
            except RegistryError as err:  # reported by `plugins list`, not a crash of every command
                self._damaged.append(f"installed copy damaged: {err}")
        return found

    def plugins(self) -> list[PluginStatus]:
        self.state.tidy()
        state = self.state.load()
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
        return self._status(versions, self.state.load().plugins.get(plugin_id, PluginState()), chosen)

    def served_by_others(self, manifest: PluginManifest) -> dict[str, list[str]]:
        """Per task of `manifest`, the other enabled plugins serving it now: what installing it may take over (the
        chat asks before, an install reports it in `InstallResult.takes_over`)."""
        enabled = [s for s in self.plugins() if s.enabled and s.id != manifest.id]
        found = {task: [s.id for s in enabled if task in s.manifest.tasks] for task in manifest.tasks}
        return {task: ids for task, ids in found.items() if ids}

    def _status(self, versions: list[PluginRecord], state: PluginState,
                chosen: PluginRecord | None = None) -> PluginStatus:
        versions = sorted(versions, key=lambda r: (Version(r.version), r.source))
        active = chosen or next((r for r in versions if r.version == state.active), versions[-1])
        trust = state.trust.get(trust_key(active))
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

    # ------------------------------------------------------------------ weights
    def weights_folder(self, record: PluginRecord) -> Path:
        """Where a plugin's weight files are (beside the manifest, or in the models folder for official ones)."""
        if record.manifest.weights_source == "models-pull":
            if self.models_dir is None:
                raise RegistryError("this registry was opened without a models folder")
            return kind_for(record.manifest).pulled_folder(record.manifest, self.models_dir)
        return record.folder

    def verify(self, record: PluginRecord) -> None:
        """Check every listed weight file: present, safetensors, SHA-256 as in the manifest."""
        verify_weights(record, self.weights_folder(record))

    # ------------------------------------------------------------------ search
    def signature(self) -> str:
        """Changes whenever the set of searchable plugins may have changed: a registry change, or packages with
        plugins installed or upgraded (read once per catalogue; scanning every distribution is slow)."""
        if self._entry_point_signature is None:
            self._entry_point_signature = entry_point_signature() if self.use_entry_points else ""
        try:  # every change replaces state.json (a new inode): its stat is a change marker that costs microseconds
            info = self.state.file.stat()
            marker = f"{info.st_ino}:{info.st_mtime_ns}:{info.st_size}"
        except FileNotFoundError:
            marker = "no-state"
        return f"{marker}|{self._entry_point_signature}"

    def index(self) -> SearchIndex:
        from registry.index import SearchIndex

        if self._index is None:
            self._index = SearchIndex(self.state.root / INDEX_FOLDER)
        return self._index

    def sync_index(self, before: str, plugin_id: str) -> None:
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
