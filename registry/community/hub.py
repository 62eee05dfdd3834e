"""`CommunityIndexes`: the indexes a user added, read, checked, searched and installed from.

An install by id resolves the id through the indexes, downloads the archive (or reuses a verified copy), checks
its size and SHA-256 against the signed entry before anything is unpacked, checks that the archive's manifest is
the entry's, and then installs it with `Registry.install`, the one install path, with its checks and its trust.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugins.progress import Progress
from registry.community.errors import IndexRefused, IndexUnavailable
from registry.community.format import parse_document
from registry.community.resolve import Pins, Refusal, Usable, check_entries, latest, resolve
from registry.community.search import Found, IndexedSearch, merge
from registry.community.signing import fingerprint, read_public_key
from registry.community.sources import (
    Fetched,
    IndexSource,
    Sources,
    check_name,
    is_remote,
    normalise_location,
)
from registry.errors import RegistryError
from registry.files import utc_now

if TYPE_CHECKING:  # the store imports this package's search: typed here only
    from registry.store import InstallResult, Registry

SEARCH_FOLDER = "search"


@dataclass(frozen=True)
class IndexView:
    """One index as read now: where from, and its usable and refused entries."""

    source: IndexSource
    fetched: Fetched
    title: str | None
    usable: list[Usable]
    refused: list[Refusal]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.source.name, "location": self.source.location, "how": self.fetched.how,
                "fetched": self.fetched.fetched, "title": self.title, "plugins": len({u.entry.id for u in self.usable}),
                "entries": len(self.usable), "refused": [r.line for r in self.refused]}


@dataclass
class Catalogue:
    """Every added index, read now; the ones that could not be read are `problems` (one line each)."""

    views: list[IndexView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def usable(self) -> list[Usable]:
        return [u for v in self.views for u in v.usable]

    @property
    def refused(self) -> list[Refusal]:
        return [r for v in self.views for r in v.refused]


@dataclass(frozen=True)
class Installed:
    result: InstallResult
    usable: Usable
    warnings: list[str]


class CommunityIndexes:
    def __init__(self, config_dir: Path, cache_dir: Path) -> None:
        self.sources = Sources(config_dir, cache_dir)
        self.pins = Pins(config_dir)
        self.search_folder = Path(cache_dir) / SEARCH_FOLDER

    # ------------------------------------------------------------------ indexes
    def add(self, name: str, location: str, key: str | None = None, allow_unsigned: bool = False) -> IndexView:
        """Add an index and read it once (a location that is not an index is refused and nothing is kept)."""
        check_name(name)
        sources = self.sources.all()
        if any(s.name == name for s in sources):
            raise IndexRefused(f"an index named '{name}' is already added; `diffplugin index remove {name}` first")
        where = normalise_location(location)
        same = next((s for s in sources if s.location == where), None)
        if same is not None:
            raise IndexRefused(f"{where} is already added, as '{same.name}'")
        source = IndexSource(name=name, location=where, key=read_public_key(key) if key else None,
                             require_signatures=is_remote(where) and not allow_unsigned, added=utc_now())
        try:
            view = self._view(source, refresh=True)
            self.sources.save([*sources, source])
        except BaseException:
            self.sources.forget(name)
            raise
        return view

    def remove(self, name: str) -> IndexSource:
        source = self.sources.get(name)
        self.sources.save([s for s in self.sources.all() if s.name != name])
        self.sources.forget(name)
        return source

    def update(self, name: str | None = None) -> list[tuple[IndexSource, IndexView | None, str | None]]:
        """Refresh each index (or the one named): its view, or why it could not be refreshed (its cached copy is
        still used)."""
        chosen = [self.sources.get(name)] if name else self.sources.all()
        results: list[tuple[IndexSource, IndexView | None, str | None]] = []
        for source in chosen:
            try:
                results.append((source, self._view(source, refresh=True), None))
            except (IndexRefused, IndexUnavailable) as err:
                results.append((source, None, str(err)))
        return results

    def catalogue(self) -> Catalogue:
        catalogue = Catalogue()
        for source in self.sources.all():
            try:
                catalogue.views.append(self._view(source, refresh=False))
            except (IndexRefused, IndexUnavailable) as err:
                catalogue.problems.append(f"index '{source.name}': {err}")
        return catalogue

    def _view(self, source: IndexSource, refresh: bool) -> IndexView:
        fetched = self.sources.refresh(source) if refresh else self.sources.read(source)
        label = source.location if fetched.how in ("local", "downloaded") else str(self.sources.cache_folder(
            source.name))
        title, entries = parse_document(fetched.data, label)
        pins = self.pins.load()
        usable, refused, new_pins = check_entries(source, entries, pins)
        if new_pins:
            self.pins.save({**pins, **new_pins})
        return IndexView(source, fetched, title, usable, refused)

    # ------------------------------------------------------------------ plugins
    def resolve(self, ref: str, index: str | None = None) -> tuple[Usable, list[str]]:
        catalogue = self.catalogue()
        usable, refused = catalogue.usable, catalogue.refused
        if index is not None:
            self.sources.get(index)
            usable = [u for u in usable if u.source.name == index]
            refused = [r for r in refused if r.index == index]
        try:
            return resolve(usable, refused, ref)
        except IndexRefused as err:
            if catalogue.problems and not usable:
                raise IndexRefused(f"{err} ({'; '.join(catalogue.problems)})") from None
            raise

    def download(self, usable: Usable, progress: Progress | None = None) -> Path:
        archive = usable.entry.archive
        return self.sources.download(usable.source, archive.urls, archive.size, archive.sha256, usable.label,
                                     progress)

    def install(self, registry: Registry, ref: str, trust: bool = False, index: str | None = None,
                progress: Progress | None = None) -> Installed:
        """Install `ns/name[@version]` from the indexes into `registry`. Every check passes or nothing changes."""
        usable, warnings = self.resolve(ref, index)
        archive = self.download(usable, progress)
        label = f"{usable.label} archive"
        try:
            try:
                shipped, _ = registry.validate(archive)
                if shipped != usable.entry.manifest:
                    raise IndexRefused(f"{usable.label}: the archive's diffplugin.yaml is not the manifest its "
                                       "entry lists; refused, nothing installed")
            except RegistryError:
                archive.unlink(missing_ok=True)  # a bad plugin is not kept for later installs
                raise
            result = registry.install(archive, trust=trust)  # its refusals (trust) keep the verified archive
        except RegistryError as err:
            err.args = (str(err).replace(str(archive), label),)  # name the plugin, not the cache file
            raise
        return Installed(result, usable, warnings)

    def prefetch(self, progress: Progress | None = None) -> list[Usable]:
        """Download the archive of every plugin's newest usable version, for installs without the network."""
        offered = list(latest(self.catalogue().usable).values())
        for usable in offered:
            self.download(usable, progress)
        return offered

    def search(self, registry: Registry, text: str, limit: int = 5) -> tuple[list[Found], list[str]]:
        """Installed and indexed plugins ranked together by meaning; and indexes that could not be read."""
        installed = registry.search(text, limit)
        catalogue = self.catalogue()
        offered = latest(catalogue.usable)
        indexed = IndexedSearch(self.search_folder).search(offered, text, limit + len(installed)) if offered else []
        versions = {s.id: s.active.version for s in registry.plugins()} if offered else {}
        return merge(installed, indexed, offered, versions, limit), catalogue.problems

    def offered(self) -> tuple[dict[str, Usable], list[str]]:
        """Per plugin id, the entry an install without a version takes; and indexes that could not be read."""
        catalogue = self.catalogue()
        return latest(catalogue.usable), catalogue.problems

    def unpin(self, namespace: str) -> dict[str, str]:
        pin = self.pins.forget(namespace)
        return {"namespace": namespace, "key": pin.key, "key_fingerprint": fingerprint(pin.key), "index": pin.index}

