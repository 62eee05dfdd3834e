"""Plugins that pip-installed packages expose, found through an entry-point group without importing them.

A package declares, in its pyproject.toml::

    [project.entry-points."diffplugin.plugins"]
    acme-warmth = "acme_warmth:diffplugin.yaml"     # package:manifest file (or a folder of manifests)

Discovery reads the distribution's metadata and the manifest file; the package is never imported. A broken
plugin comes back as a `DiscoverResult` with an error instead of stopping discovery.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePosixPath
from typing import Literal

from registry.errors import RegistryError
from registry.manifest import PluginManifest, load_manifest

ENTRY_POINT_GROUP = "diffplugin.plugins"
#: The distribution whose plugins are this project's own: trusted, and the only one allowed the built-in namespace.
BUILTIN_DISTRIBUTION = "diffplugin-assistant"

Source = Literal["builtin", "entry-point", "installed"]


@dataclass(frozen=True)
class PluginRecord:
    """One version of one plugin, wherever it came from."""

    manifest: PluginManifest
    folder: Path
    source: Source
    distribution: str | None = None

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def builtin(self) -> bool:
        return self.source == "builtin"


@dataclass(frozen=True)
class DiscoverResult:
    record: PluginRecord | None
    origin: str
    error: str | None = None


def _resource_path(ep: EntryPoint) -> Path:
    package, _, resource = ep.value.partition(":")
    if not package or not resource:
        raise RegistryError(f"entry point '{ep.name}' = '{ep.value}' is not 'package:manifest-path'")
    relative = PurePosixPath(*package.split("."), *PurePosixPath(resource).parts)
    if ep.dist is not None:
        candidate = Path(str(ep.dist.locate_file(str(relative))))
        if candidate.exists():
            return candidate
    # Editable installs keep their files elsewhere; find_spec locates the package (importing only its parents).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RegistryError(f"entry point '{ep.name}': package '{package}' not found")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*PurePosixPath(resource).parts)


def discover_entry_points(group: str = ENTRY_POINT_GROUP) -> list[DiscoverResult]:
    results: list[DiscoverResult] = []
    for ep in sorted(entry_points(group=group), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        distribution = ep.dist.name if ep.dist else None
        origin = f"{distribution or '?'}: {ep.name} = {ep.value}"
        source: Source = "builtin" if distribution == BUILTIN_DISTRIBUTION else "entry-point"
        try:
            path = _resource_path(ep).resolve()
            files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
            for file in files:
                manifest = load_manifest(file)
                results.append(DiscoverResult(PluginRecord(manifest, file.parent, source, distribution), origin))
        except RegistryError as err:
            results.append(DiscoverResult(None, origin, str(err)))
    return results


def entry_point_signature(group: str = ENTRY_POINT_GROUP) -> str:
    """Changes whenever a package adds, removes or upgrades a plugin entry point (cheap: metadata only)."""
    parts = sorted(f"{e.dist.name if e.dist else '?'}={e.dist.version if e.dist else '?'}:{e.name}={e.value}"
                   for e in entry_points(group=group))
    return "|".join(parts)
