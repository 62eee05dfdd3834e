"""Indexed plugins in the same search as the installed ones.

The indexed plugins (per id, the version an install would take) are embedded into a `SearchIndex` of their own,
with the same model and the same kind of texts as the registry's (description, tasks, examples), so their scores
compare directly with the installed plugins' and one ranked list shows both. Like the registry's, this index is
derived data: it records what it was built from and is rebuilt when the indexes change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import Version

from registry.community.resolve import Usable, describe
from registry.index import SearchHit, SearchIndex


@dataclass(frozen=True)
class Found:
    """One search result: an installed plugin, or one an index offers (`usable`)."""

    hit: SearchHit
    source: str  # "installed" or "index"
    usable: Usable | None = None
    installed_version: str | None = None  # an indexed plugin also installed (disabled, or another version)
    update: str | None = None  # an installed plugin whose index lists a newer version

    @property
    def id(self) -> str:
        return self.hit.id

    @property
    def mark(self) -> str:
        if self.source == "installed":
            return "installed" + (f", index has {self.update}" if self.update else "")
        assert self.usable is not None  # an index hit carries what the index offers
        installed = f", installed {self.installed_version}" if self.installed_version else ""
        return f"index:{self.usable.source.name}{installed}"

    def to_json(self) -> dict[str, Any]:
        data = {**self.hit.to_json(), "source": self.source, "mark": self.mark, "update": self.update,
                "installed_version": self.installed_version}
        if self.usable is not None:
            details = describe(self.usable)
            data.update({key: details[key] for key in ("index", "license", "non_commercial", "publisher",
                                                       "key_fingerprint", "signed", "kind", "examples")})
            data["archive_sha256"] = details["archive"]["sha256"]
        return data


class IndexedSearch:
    def __init__(self, folder: Path) -> None:
        self.index = SearchIndex(folder)

    def search(self, offered: dict[str, Usable], text: str, limit: int) -> list[SearchHit]:
        manifests = [u.entry.manifest for u in offered.values()]
        signature = "|".join(sorted(f"{u.source.name}:{u.entry.id}:{u.entry.version}:{u.entry.archive.sha256}"
                                    for u in offered.values()))
        self.index.ensure(signature, lambda: manifests)
        try:
            return self.index.search(text, limit)
        except Exception:  # a damaged index: derived data, rebuilt (as `Registry.search` does)
            self.index.rebuild(manifests, signature)
            return self.index.search(text, limit)


def merge(installed: list[SearchHit], indexed: list[SearchHit], offered: dict[str, Usable],
          installed_versions: dict[str, str], limit: int) -> list[Found]:
    """One ranked list: an installed plugin is shown as installed (with a newer indexed version, if any); an
    indexed one as offered by its index."""
    found = []
    shown = set()
    for hit in installed:
        offer = offered.get(hit.id)
        newer = offer.entry.version if offer and Version(offer.entry.version) > Version(hit.version) else None
        found.append(Found(hit, "installed", update=newer))
        shown.add(hit.id)
    for hit in indexed:
        if hit.id in shown or hit.id not in offered:
            continue
        found.append(Found(hit, "index", offered[hit.id], installed_version=installed_versions.get(hit.id)))
    return sorted(found, key=lambda f: f.hit.score, reverse=True)[:limit]
