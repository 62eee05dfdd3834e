"""Which index entries may be used, and which one `ns/name[@version]` means.

An entry is usable when it is a valid entry, its namespace is not (and does not look like) a reserved one, and its
signature holds: required for remote indexes (unless added with `--allow-unsigned`), checked wherever there is
one, made by the index's own key when it was added with `--key`, and by the key pinned for its namespace.

Pinning: the first key seen signing a namespace is recorded in `pins.json` in the config folder, and from then on
only entries signed by that key are used for that namespace, from any index. If one document brings two keys for
a namespace not pinned yet, neither is pinned and its entries are refused: there is no first to trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, Field

from plugins.atomic_files import write_atomic
from registry.community.errors import IndexRefused
from registry.community.format import IndexEntry, RawEntry
from registry.community.signing import fingerprint, verify
from registry.community.sources import IndexSource
from registry.files import utc_now
from registry.manifest import reserved_lookalike

PINS_FILE = "pins.json"


class Pin(BaseModel):
    key: str
    index: str = Field(description="The index where the key was first seen.")
    at: str


class _PinsFile(BaseModel):
    namespaces: dict[str, Pin] = Field(default_factory=dict)


class Pins:
    """The key pinned for each namespace (kept with the configuration, not the cache: it is a trust decision)."""

    def __init__(self, config_dir: Path) -> None:
        self.file = Path(config_dir) / PINS_FILE

    def load(self) -> dict[str, Pin]:
        try:
            return _PinsFile.model_validate_json(self.file.read_bytes()).namespaces
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not the expected JSON"
            raise IndexRefused(f"{self.file}: damaged ({reason}); it holds the publisher keys you trusted, so it is "
                               "never reset by itself: repair it or move it away") from None

    def save(self, pins: dict[str, Pin]) -> None:
        text = _PinsFile(namespaces=dict(sorted(pins.items()))).model_dump_json(indent=2)
        write_atomic(self.file, text.encode(), durable=True)  # the keys the user trusted: worth a flush

    def forget(self, namespace: str) -> Pin:
        pins = self.load()
        if namespace not in pins:
            raise IndexRefused(f"no key is pinned for the namespace '{namespace}/' (pinned: "
                               f"{', '.join(pins) or 'none'})")
        pin = pins.pop(namespace)
        self.save(pins)
        return pin


@dataclass(frozen=True)
class Usable:
    """An entry that passed every check, and the index it came from."""

    source: IndexSource
    entry: IndexEntry

    @property
    def signed(self) -> bool:
        return self.entry.signature is not None

    @property
    def label(self) -> str:
        return f"{self.entry.label} (index '{self.source.name}')"


@dataclass(frozen=True)
class Refusal:
    """An entry that may not be used, and why (one line)."""

    index: str
    label: str
    plugin_id: str | None
    version: str | None
    reason: str

    @property
    def line(self) -> str:
        return f"index '{self.index}': {self.label}: {self.reason}"


def check_entries(source: IndexSource, entries: list[RawEntry], pins: dict[str, Pin]
                  ) -> tuple[list[Usable], list[Refusal], dict[str, Pin]]:
    """The usable entries of one index document, the refused ones, and the pins it adds."""
    usable: list[Usable] = []
    refused: list[Refusal] = []
    seen: set[tuple[str, Version]] = set()
    candidates: dict[str, set[str]] = {}  # namespace -> keys seen in this document, for namespaces not pinned

    def refuse(item: RawEntry, reason: str) -> None:
        entry = item.entry
        refused.append(Refusal(source.name, item.label, entry.id if entry else _raw_id(item),
                               entry.version if entry else None, reason))

    for item in entries:
        entry = item.entry
        if entry is None:
            refuse(item, f"not a valid entry ({item.problem})")
            continue
        namespace = entry.manifest.namespace
        if reserved := reserved_lookalike(namespace):
            refuse(item, f"the namespace '{namespace}/' is, or looks like, '{reserved}/', which is reserved for "
                         "this project's built-in plugins")
            continue
        if (entry.id, Version(entry.version)) in seen:
            refuse(item, "listed twice in this index")
            continue
        seen.add((entry.id, Version(entry.version)))
        pin = pins.get(namespace)
        if entry.signature is None:
            if source.require_signatures or source.key:
                refuse(item, "unsigned; this index requires signed entries (a local index, or one added with "
                             "--allow-unsigned, may hold unsigned ones)")
            elif pin is not None:
                refuse(item, f"unsigned, but the namespace '{namespace}/' is pinned to the key "
                             f"{fingerprint(pin.key)}")
            else:
                usable.append(Usable(source, entry))
            continue
        assert entry.publisher is not None  # IndexEntry refuses a signed entry without one
        key = entry.publisher.key
        if not verify(item.raw, key, entry.signature):
            refuse(item, "the signature does not match the entry (it was changed after signing, or not signed "
                         "with the key it names)")
        elif source.key is not None and key != source.key:
            refuse(item, f"signed by the key {fingerprint(key)}, but this index was added with --key "
                         f"{fingerprint(source.key)}")
        elif pin is not None and key != pin.key:
            refuse(item, f"signed by the key {fingerprint(key)}, but the namespace '{namespace}/' is pinned to "
                         f"{fingerprint(pin.key)} (first seen in index '{pin.index}'); "
                         f"`diffplugin index unpin {namespace}` if its publisher really changed keys")
        else:
            usable.append(Usable(source, entry))
            if pin is None:
                candidates.setdefault(namespace, set()).add(key)
    new_pins = {ns: Pin(key=next(iter(keys)), index=source.name, at=utc_now())
                for ns, keys in candidates.items() if len(keys) == 1}
    for namespace in sorted(ns for ns, keys in candidates.items() if len(keys) > 1):
        for u in [u for u in usable if u.entry.manifest.namespace == namespace]:
            usable.remove(u)
            refused.append(Refusal(source.name, u.entry.label, u.entry.id, u.entry.version,
                                   f"the namespace '{namespace}/' is signed by several keys in this index and none "
                                   "is pinned yet, so none is trusted"))
    return usable, refused, new_pins


def _raw_id(item: RawEntry) -> str | None:
    manifest = item.raw.get("manifest")
    value = manifest.get("id") if isinstance(manifest, dict) else None
    return value if isinstance(value, str) else None


def split_ref(ref: str) -> tuple[str, str | None]:
    """'ns/name@1.2.0' -> ('ns/name', '1.2.0'), checked."""
    plugin_id, _, version = ref.partition("@")
    if plugin_id.count("/") != 1 or not all(plugin_id.split("/")):
        raise IndexRefused(f"'{ref}' is not a plugin id: use namespace/name, optionally @version")
    if version:
        try:
            Version(version)
        except InvalidVersion:
            raise IndexRefused(f"'{ref}': '{version}' is not a version (e.g. 1.0.0)") from None
    return plugin_id, version or None


def resolve(usable: list[Usable], refused: list[Refusal], ref: str) -> tuple[Usable, list[str]]:
    """The entry `ref` means, and warnings. Without a version: the newest version that is not yanked (the first
    index listing it, in the order they were added). With one: exactly that version, yanked or not."""
    plugin_id, version = split_ref(ref)
    candidates = [u for u in usable if u.entry.id == plugin_id]
    refusals = [r for r in refused if r.plugin_id == plugin_id]
    if version is not None:
        wanted = Version(version)
        exact = [u for u in candidates if Version(u.entry.version) == wanted]
        if exact:
            chosen = exact[0]
            warnings = [f"{chosen.label} is yanked" + (f": {chosen.entry.yanked_reason}"
                                                         if chosen.entry.yanked_reason else "")] \
                if chosen.entry.yanked else []
            return chosen, warnings
        refusal = next((r for r in refusals if r.version and Version(r.version) == wanted), None)
        if refusal is not None:
            raise IndexRefused(f"{refusal.line}; refused, nothing installed")
        listed = ", ".join(sorted({u.entry.version for u in candidates}, key=Version)) or "none"
        raise IndexRefused(f"the indexes list no version {version} of '{plugin_id}' (listed: {listed})")
    live = [u for u in candidates if not u.entry.yanked]
    if not candidates or not live:
        if refusals:
            raise IndexRefused(f"{refusals[0].line}; refused, nothing installed")
        if not candidates:
            raise IndexRefused(f"no plugin '{plugin_id}' in the indexes; `diffplugin plugins search` finds plugins "
                               "by what they do, `diffplugin index update` refreshes the indexes")
        yanked = "; ".join(f"{u.entry.version}" + (f" ({u.entry.yanked_reason})" if u.entry.yanked_reason else "")
                           for u in candidates)
        raise IndexRefused(f"every listed version of '{plugin_id}' is yanked ({yanked}); to install one anyway, "
                           f"ask for it by exact version ({plugin_id}@{candidates[0].entry.version})")
    newest = max(Version(u.entry.version) for u in live)
    chosen = next(u for u in live if Version(u.entry.version) == newest)
    newer_refused = [r for r in refusals if r.version and Version(r.version) > newest]
    if newer_refused:  # never fall back to an older version in silence when a newer one was tampered with
        raise IndexRefused(f"{newer_refused[0].line}; refused, nothing installed (ask for "
                           f"{plugin_id}@{chosen.entry.version} to install the newest usable version)")
    return chosen, []


def latest(usable: list[Usable]) -> dict[str, Usable]:
    """Per plugin id, the entry an install without a version would take (what search shows)."""
    best: dict[str, Usable] = {}
    for u in usable:
        if u.entry.yanked:
            continue
        current = best.get(u.entry.id)
        if current is None or Version(u.entry.version) > Version(current.entry.version):
            best[u.entry.id] = u
    return best


def describe(u: Usable) -> dict[str, Any]:
    """What a user sees of an indexed plugin before installing it: licence, publisher, hashes, examples."""
    m, entry = u.entry.manifest, u.entry
    return {
        "id": m.id, "version": m.version, "index": u.source.name, "name": m.name, "description": m.description,
        "kind": m.kind, "tasks": m.tasks, "examples": m.examples, "license": m.license,
        "non_commercial": m.non_commercial, "authors": [a.name for a in m.authors],
        "publisher": entry.publisher.name if entry.publisher else None,
        "publisher_key": entry.publisher.key if entry.publisher else None,
        "key_fingerprint": fingerprint(entry.publisher.key) if entry.publisher else None,
        "signed": entry.signature is not None, "yanked": entry.yanked, "yanked_reason": entry.yanked_reason,
        "published": entry.published, "archive": entry.archive.model_dump(mode="json"),
        "weights": [w.model_dump(mode="json") for w in m.weights],
    }
