"""Publishing into an index folder: check the plugin as an install would, build its archive, add its signed entry.

Published versions never change: publishing a version already listed is refused (raise the version, or yank the
old one). The archive is built the same way every time (sorted members, no owners, no times), so the same folder
gives the same SHA-256. The archive lands before the entry that names it, and `index.json` is replaced with one
rename, so an index is never seen half-written; a failed publish removes its archive again.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; one publish at a time
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before every lock

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from packaging.version import Version

from plugins.atomic_files import write_atomic
from registry.community.errors import IndexRefused
from registry.community.format import (
    ARCHIVES_FOLDER,
    FORMAT,
    INDEX_FILE,
    ArchiveRef,
    IndexEntry,
    Publisher,
    RawEntry,
    entry_json,
    parse_document,
)
from registry.community.signing import fingerprint, key_text, sign
from registry.errors import RegistryError
from registry.files import ignored, refuse_links, sha256_file, utc_now
from registry.manifest import MANIFEST_FILE, PluginManifest

if TYPE_CHECKING:
    from registry.store import Registry


@dataclass(frozen=True)
class Published:
    entry: IndexEntry
    archive: Path
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {"id": e.id, "version": e.version, "archive": str(self.archive), "sha256": e.archive.sha256,
                "size": e.archive.size, "signed": e.signature is not None,
                "key_fingerprint": fingerprint(e.publisher.key) if e.publisher else None, "warnings": self.warnings}



def build_archive(folder: Path, target: Path, top: str) -> None:
    """A reproducible .tar.gz of a plugin folder under one top folder, bytecode and clutter left out."""
    refuse_links(folder)
    with target.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if ignored(relative.parts):
                continue
            info = tarfile.TarInfo(f"{top}/{relative.as_posix()}")
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, 0o644
                with path.open("rb") as f:
                    tar.addfile(info, f)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One publish at a time into an index folder (two would each write index.json without the other's entry)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


class IndexFolder:
    """An index as a folder of files, as its publisher keeps it."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).expanduser()
        self.document = self.folder / INDEX_FILE

    def entries(self) -> tuple[str | None, list[RawEntry]]:
        if not self.document.exists():
            return None, []
        try:
            data = self.document.read_bytes()
        except OSError as err:
            raise IndexRefused(f"{self.document}: cannot be read ({err.strerror or err})") from None
        return parse_document(data, str(self.document))

    def _write(self, name: str | None, raws: list[dict[str, Any]]) -> None:
        def order(raw: dict[str, Any]) -> tuple[str, Version]:
            manifest = raw.get("manifest")
            if not isinstance(manifest, dict):
                manifest = {}
            try:
                return str(manifest.get("id", "")), Version(str(manifest.get("version", "0")))
            except ValueError:
                return str(manifest.get("id", "")), Version("0")

        document: dict[str, Any] = {"format": FORMAT, **({"name": name} if name else {}), "generated": utc_now(),
                    "entries": sorted(raws, key=order)}
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        write_atomic(self.document, text.encode("utf-8"), durable=True)

    def publish(self, plugin_folder: Path, registry: Registry, key: Ed25519PrivateKey | None, publisher: str | None,
                name: str | None = None) -> Published:
        """Add `plugin_folder` as a new entry, signed with `key` (None: unsigned, for local indexes only)."""
        plugin_folder = Path(plugin_folder).expanduser()
        manifest, warnings = registry.validate(plugin_folder)
        if self.folder.resolve().is_relative_to(plugin_folder.resolve()):
            raise IndexRefused(f"{self.folder}: the index folder is inside the plugin folder; publish elsewhere")
        with _locked(self.folder):
            index_name, entries = self.entries()
            public = key_text(key.public_key()) if key is not None else None
            self._check_new(manifest, entries, public)
            namespace, short = manifest.id.split("/")
            relative = f"{ARCHIVES_FOLDER}/{namespace}/{short}-{manifest.version}.tar.gz"
            target = self.folder / relative
            work = Path(tempfile.mkdtemp(prefix=".publish-", dir=self.folder))
            try:
                built = work / target.name
                build_archive(plugin_folder, built, f"{namespace}-{short}-{manifest.version}")
                try:
                    shipped, _ = registry.validate(built)  # what users will install: checked as they will
                except RegistryError as err:
                    raise IndexRefused(str(err).replace(str(built), str(plugin_folder))) from None
                if shipped != manifest:
                    raise IndexRefused(f"{plugin_folder}: the archive's manifest differs from the folder's")
                entry = IndexEntry(
                    manifest=manifest,
                    archive=ArchiveRef(urls=[relative], sha256=sha256_file(built), size=built.stat().st_size),
                    publisher=Publisher(name=publisher or manifest.authors[0].name, key=public) if public else None,
                    published=utc_now())
                raw = entry_json(entry)
                if key is not None:
                    raw["signature"] = sign(raw, key)
                entry = IndexEntry.model_validate(raw)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(built, target)
                try:
                    self._write(name or index_name, [e.raw for e in entries] + [raw])
                except BaseException:
                    target.unlink(missing_ok=True)
                    raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
        return Published(entry, target, warnings)

    def _check_new(self, manifest: PluginManifest, entries: list[RawEntry], public: str | None) -> None:
        for item in entries:
            entry = item.entry
            if entry is None:
                continue
            if entry.id == manifest.id and Version(entry.version) == Version(manifest.version):
                raise IndexRefused(f"{self.document}: {manifest.id} {manifest.version} is already published, and a "
                                   "published version never changes; raise the version in "
                                   f"{MANIFEST_FILE} (and yank the old one if it is broken)")
            if entry.manifest.namespace == manifest.namespace and entry.publisher and public \
                    and entry.publisher.key != public:
                raise IndexRefused(f"{self.document}: the namespace '{manifest.namespace}/' is published here with "
                                   f"the key {fingerprint(entry.publisher.key)}, and users have pinned it; sign "
                                   f"with that key, not {fingerprint(public)}")

    def yank(self, plugin_id: str, version: str, key: Ed25519PrivateKey | None, reason: str | None,
             undo: bool = False) -> IndexEntry:
        """Mark a published version yanked (or not, with `undo`), signed again by its publisher's key."""
        with _locked(self.folder):
            index_name, entries = self.entries()
            found = next((item for item in entries if item.entry is not None and item.entry.id == plugin_id
                          and Version(item.entry.version) == Version(version)), None)
            if found is None:
                raise IndexRefused(f"{self.document}: {plugin_id} {version} is not published here")
            entry = found.entry
            assert entry is not None  # `found` was picked among valid entries
            if entry.publisher is not None:
                public = key_text(key.public_key()) if key is not None else None
                if public != entry.publisher.key:
                    raise IndexRefused(f"{self.document}: {entry.label} is signed by the key "
                                       f"{fingerprint(entry.publisher.key)}; yank it with that key")
            raw = entry_json(entry.model_copy(update={"yanked": not undo,
                                                      "yanked_reason": None if undo else reason}))
            raw.pop("signature", None)
            if entry.publisher is not None and key is not None:  # the key was checked against the publisher's
                raw["signature"] = sign(raw, key)
            updated = IndexEntry.model_validate(raw)
            self._write(index_name, [raw if item is found else item.raw for item in entries])
        return updated
