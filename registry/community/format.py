"""The index document: one static JSON file (`index.json`) listing every published version of every plugin.

An index is a folder: `index.json` and the archives it points to (`archives/<namespace>/<name>-<version>.tar.gz`).
Any static HTTP server can serve it; a local folder or a git checkout of it works as an offline mirror.

Each entry carries the plugin's whole manifest (so search, licences, examples and the weight files' SHA-256 are
known before anything is downloaded), the archive's URLs, size and SHA-256, the publisher's public key and an
ed25519 signature. The signature covers the entry exactly as it is stored, less its `signature` field: the
canonical JSON of that object (keys sorted, no spaces, UTF-8; `signed_bytes`). So nothing in an entry, the yanked
flag included, can change without the publisher's key.

`diffplugin index schema` prints the JSON Schema made from these models; docs/index-schema.json is that output (a
test keeps them equal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from packaging.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from registry.community.errors import IndexRefused
from registry.files import ArchiveLimits
from registry.manifest import PluginManifest

FORMAT: Final = "diffplugin-index/1"
INDEX_FILE = "index.json"
ARCHIVES_FOLDER = "archives"
#: An index document is read no further than this (about 20,000 entries with long manifests).
MAX_INDEX_BYTES = 32 * 1024**2
MAX_ENTRIES = 20_000
MAX_URLS = 8
#: No archive may be larger than what an install may expand to: its contents could not be installed anyway.
MAX_ARCHIVE_BYTES = ArchiveLimits().max_total_bytes
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".tar")
KEY_PREFIX = "ed25519:"

_KEY = r"^ed25519:[A-Za-z0-9+/]{43}=$"  # 32 raw bytes
_SIGNATURE = r"^[A-Za-z0-9+/]{86}==$"  # 64 raw bytes
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def archive_suffix(url: str) -> str | None:
    """The archive type an URL or file name ends with ('.tar.gz', …), else None."""
    path = url.split("?", 1)[0].split("#", 1)[0].lower()
    return next((suffix for suffix in ARCHIVE_SUFFIXES if path.endswith(suffix)), None)


class ArchiveRef(_Strict):
    """Where the plugin's archive is, and what it must be."""

    urls: list[str] = Field(min_length=1, max_length=MAX_URLS, description="Tried in order: a path relative to "
                            "the index (e.g. 'archives/acme/sharpen-1.0.0.tar.gz') or an absolute http(s) URL.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Lower-case hex SHA-256 of the archive.")
    size: int = Field(ge=1, le=MAX_ARCHIVE_BYTES, description="Size of the archive in bytes.")

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if len(url) > 2000:
                raise ValueError("an archive URL may have at most 2,000 characters")
            if _SCHEME.match(url):
                if not url.startswith(("https://", "http://")):
                    raise ValueError(f"'{url}' is neither a relative path nor an http(s) URL")
            elif url.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", url):
                raise ValueError(f"'{url}' must stay inside the index (no leading '/', no '..')")
            if archive_suffix(url) is None:
                raise ValueError(f"'{url}' does not end with {', '.join(ARCHIVE_SUFFIXES)}")
        return urls


class Publisher(_Strict):
    """Who signed the entry. The first key seen for a namespace is pinned: later entries need the same key."""

    name: str = Field(min_length=1, max_length=200, description="Person or organisation publishing.")
    key: str = Field(pattern=_KEY, description="'ed25519:' and the base64 of the 32-byte public key.")


class IndexEntry(_Strict):
    """One version of one plugin."""

    manifest: PluginManifest = Field(description="The plugin's diffplugin.yaml, as in its archive (which must "
                                     "hold exactly this manifest); its weights list every weight file's SHA-256.")
    archive: ArchiveRef
    publisher: Publisher | None = Field(None, description="Required for a signed entry; local indexes may hold "
                                        "unsigned ones.")
    published: str = Field(max_length=40, description="UTC time of publishing (ISO 8601).")
    yanked: bool = Field(False, description="Withdrawn: never installed unless asked for by exact version.")
    yanked_reason: str | None = Field(None, max_length=500, description="Why it was yanked, for users.")
    signature: str | None = Field(None, pattern=_SIGNATURE, description="base64 ed25519 signature by "
                                  "publisher.key of the canonical JSON of this entry without 'signature'.")

    @model_validator(mode="after")
    def _consistent(self) -> IndexEntry:
        if self.signature is not None and self.publisher is None:
            raise ValueError("a signed entry needs a 'publisher' with its key")
        if self.yanked_reason is not None and not self.yanked:
            raise ValueError("'yanked_reason' is only for a yanked entry")
        return self

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def label(self) -> str:
        return f"{self.id} {self.version}"


class IndexDocument(_Strict):
    """A community index: every published version of every plugin it lists."""

    format: Literal["diffplugin-index/1"] = Field(FORMAT, description="Version of this document format.")
    name: str | None = Field(None, max_length=80, description="What the index calls itself (for people).")
    generated: str = Field(max_length=40, description="UTC time of the last change (ISO 8601).")
    entries: list[IndexEntry] = Field(default_factory=list, max_length=MAX_ENTRIES)


class _Envelope(BaseModel):
    """The document with its entries left raw, so that one bad entry is refused alone."""

    format: Literal["diffplugin-index/1"]
    name: str | None = Field(None, max_length=80)
    generated: str = Field(max_length=40)
    entries: list[dict[str, Any]] = Field(max_length=MAX_ENTRIES)


@dataclass(frozen=True)
class RawEntry:
    """An entry as stored (what its signature covers), and its model or why it is invalid."""

    raw: dict[str, Any]
    entry: IndexEntry | None
    problem: str | None

    @property
    def label(self) -> str:
        if self.entry is not None:
            return self.entry.label
        manifest = self.raw.get("manifest")
        if isinstance(manifest, dict):
            return f"{str(manifest.get('id', '?'))[:80]} {str(manifest.get('version', '?'))[:64]}"
        return "an entry"


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return f"field '{where}': {message}" if where else message


def parse_document(data: bytes, source: str) -> tuple[str | None, list[RawEntry]]:
    """The index's name and its entries, each valid or with its problem. A document that is not an index at all
    (not JSON, another format, too large) is refused as a whole."""
    if len(data) > MAX_INDEX_BYTES:
        raise IndexRefused(f"{source}: larger than {MAX_INDEX_BYTES:,} bytes, the most an index may be")
    try:
        envelope = _Envelope.model_validate_json(data)
    except ValidationError as err:
        raise IndexRefused(f"{source}: not a diffplugin index ({_first_error(err)})") from None
    entries = []
    for raw in envelope.entries:
        try:
            entries.append(RawEntry(raw, IndexEntry.model_validate(raw), None))
        except ValidationError as err:
            entries.append(RawEntry(raw, None, _first_error(err)))
    return envelope.name, entries


def signed_bytes(raw: dict[str, Any]) -> bytes:
    """What an entry's signature covers: the entry without 'signature', as canonical JSON."""
    payload = {key: value for key, value in raw.items() if key != "signature"}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_json(entry: IndexEntry) -> dict[str, Any]:
    """An entry as an index stores it (fields left empty are left out)."""
    return entry.model_dump(mode="json", exclude_none=True)


def newest_first(entries: list[IndexEntry]) -> list[IndexEntry]:
    return sorted(entries, key=lambda e: Version(e.version), reverse=True)


def index_schema() -> dict[str, Any]:
    return IndexDocument.model_json_schema()
