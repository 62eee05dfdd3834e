"""Plugins that pip-installed packages expose, found through an entry-point group without importing them.

A package declares, in its pyproject.toml::

    [project.entry-points."diffplugin.plugins"]
    acme-warmth = "acme_warmth:diffplugin.yaml"     # package:manifest file (or a folder of manifests)

Discovery reads the distribution's metadata and the manifest file; the package is never imported. A broken
plugin comes back as a `DiscoverResult` with an error instead of stopping discovery.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePosixPath
from typing import Literal

from registry.errors import RegistryError
from registry.files import refuse_links, refuse_pickles
from registry.manifest import PluginManifest, load_manifest, reserved_lookalike

ENTRY_POINT_GROUP = "diffplugin.plugins"
#: Where this project's own manifests are. Built-in (trusted) is decided by location, never by a package's
#: self-declared name, which any distribution could copy.
BUILTIN_MANIFESTS = (Path(__file__).resolve().parent.parent / "plugins" / "diffplugin" / "manifests").resolve()
#: The weight-free built-ins (classic restoration and adjustments, `python` kind) and the one package their code
#: may come from: a built-in manifest is trusted, so it must not be able to point at code outside the project.
BUILTIN_CODE_PACKAGE = "plugins.builtin"
BUILTIN_CODE = (Path(__file__).resolve().parent.parent / "plugins" / "builtin").resolve()
BUILTIN_FOLDERS = (BUILTIN_MANIFESTS, BUILTIN_CODE / "manifests")

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
    # Editable installs keep their files elsewhere. Ask the import system's finders where the top-level package
    # is: finding runs no package code (importing a dotted name would run its parents' __init__).
    top, *rest = package.split(".")
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        spec = find_spec(top, None) if find_spec else None
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                candidate = Path(location).joinpath(*rest, *PurePosixPath(resource).parts)
                if candidate.exists():
                    return candidate
    raise RegistryError(f"entry point '{ep.name}': '{relative}' not found in the installed package")


def discover_entry_points(group: str = ENTRY_POINT_GROUP) -> list[DiscoverResult]:
    results: list[DiscoverResult] = []
    for ep in sorted(entry_points(group=group), key=lambda e: (e.dist.name if e.dist else "", e.name)):
        distribution = ep.dist.name if ep.dist else None
        origin = f"{distribution or '?'}: {ep.name} = {ep.value}"
        try:
            path = _resource_path(ep).resolve()
            files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
            for file in files:
                record = _record(load_manifest(file), file.parent, distribution)
                results.append(DiscoverResult(record, origin))
        except RegistryError as err:
            results.append(DiscoverResult(None, origin, str(err)))
    return results


def _record(manifest: PluginManifest, folder: Path, distribution: str | None) -> PluginRecord:
    """Built in only where this project's manifests live; anything else gets the checks an install gets."""
    if folder in BUILTIN_FOLDERS:
        return PluginRecord(manifest, folder, "builtin", distribution)
    if reserved := reserved_lookalike(manifest.namespace):
        raise RegistryError(f"{folder}: the namespace '{manifest.namespace}/' is, or looks like, '{reserved}/', "
                            "which is reserved for this project's built-in plugins")
    if manifest.weights_source != "folder":
        raise RegistryError(f"{folder}: only built-in plugins may take their weights from `models pull`")
    refuse_links(folder)
    refuse_pickles(folder)
    return PluginRecord(manifest, folder, "entry-point", distribution)


def entry_point_signature(group: str = ENTRY_POINT_GROUP) -> str:
    """Changes whenever a package adds, removes or upgrades a plugin entry point (cheap: metadata only)."""
    parts = sorted(f"{e.dist.name if e.dist else '?'}={e.dist.version if e.dist else '?'}:{e.name}={e.value}"
                   for e in entry_points(group=group))
    return "|".join(parts)
