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

`Registry` is the one object callers hold; the work is done by three collaborators: `FolderState`
(registry/state.py: state.json, the lock, staging), `Catalogue` (registry/catalogue.py: what exists, its status,
search) and `Installer` (registry/installer.py: install, validate, remove, enable, disable, trust).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from plugins.progress import Progress
from registry.catalogue import Catalogue, PluginStatus, verify_weights
from registry.discover import DiscoverResult, PluginRecord
from registry.files import ArchiveLimits
from registry.installer import Installer, InstallResult
from registry.manifest import PluginManifest
from registry.state import (
    INDEX_FOLDER,
    STAGING_FOLDER,
    STATE_FILE,
    STORE_FOLDER,
    FolderState,
    PluginState,
    RegistryState,
    Trust,
)

if TYPE_CHECKING:  # imported on first search: most commands never search
    from registry.index import SearchHit, SearchIndex

__all__ = ["INDEX_FOLDER", "STAGING_FOLDER", "STATE_FILE", "STORE_FOLDER", "InstallResult", "PluginState",
           "PluginStatus", "Registry", "RegistryState", "Trust", "verify_weights"]


class Registry:
    """The single source of truth for which plugins exist. Reads manifests only; never imports plugin code."""

    def __init__(self, root: str | Path, models_dir: str | Path | None = None, entry_points: bool = True) -> None:
        self.state = FolderState(Path(root).expanduser())
        self.catalogue = Catalogue(self.state, Path(models_dir).expanduser() if models_dir else None, entry_points)
        self.installer = Installer(self.state, self.catalogue)

    @property
    def root(self) -> Path:
        return self.state.root

    @property
    def models_dir(self) -> Path | None:
        return self.catalogue.models_dir

    @property
    def use_entry_points(self) -> bool:
        return self.catalogue.use_entry_points

    # ------------------------------------------------------------------ state
    @property
    def state_file(self) -> Path:
        return self.state.file

    def load_state(self) -> RegistryState:
        return self.state.load()

    # ------------------------------------------------------------------ what exists
    def discovered(self) -> list[DiscoverResult]:
        return self.catalogue.discovered()

    def discovery_errors(self) -> list[str]:
        return self.catalogue.discovery_errors()

    def records(self) -> list[PluginRecord]:
        return self.catalogue.records()

    def plugins(self) -> list[PluginStatus]:
        return self.catalogue.plugins()

    def get(self, plugin_id: str, version: str | None = None) -> PluginStatus:
        return self.catalogue.get(plugin_id, version)

    def served_by_others(self, manifest: PluginManifest) -> dict[str, list[str]]:
        return self.catalogue.served_by_others(manifest)

    def weights_folder(self, record: PluginRecord) -> Path:
        return self.catalogue.weights_folder(record)

    def verify(self, record: PluginRecord) -> None:
        self.catalogue.verify(record)

    # ------------------------------------------------------------------ changes
    def install(self, source: str | Path, trust: bool = False, limits: ArchiveLimits = ArchiveLimits()
                ) -> InstallResult:
        return self.installer.install(source, trust, limits)

    def validate(self, source: str | Path) -> tuple[PluginManifest, list[str]]:
        return self.installer.validate(source)

    def remove(self, plugin_id: str, version: str | None = None) -> list[str]:
        return self.installer.remove(plugin_id, version)

    def enable(self, plugin_id: str, version: str | None = None, trust: bool = False) -> PluginStatus:
        return self.installer.enable(plugin_id, version, trust)

    def disable(self, plugin_id: str) -> PluginStatus:
        return self.installer.disable(plugin_id)

    # ------------------------------------------------------------------ search
    def signature(self) -> str:
        return self.catalogue.signature()

    def index(self) -> SearchIndex:
        return self.catalogue.index()

    def searchable(self) -> list[PluginManifest]:
        return self.catalogue.searchable()

    def search(self, text: str, limit: int = 5) -> list[SearchHit]:
        return self.catalogue.search(text, limit)

    def reindex(self, progress: Progress | None = None) -> int:
        return self.catalogue.reindex(progress)
