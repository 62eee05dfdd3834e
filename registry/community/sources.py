"""The indexes a user added, their cached copies, and downloads of archives.

Layout (the config folder is the data folder's `community/`, the cache folder the cache folder's `community/`)::

    <config>/indexes.json                 the indexes added, in order: name, location, key, signatures required
    <cache>/indexes/<name>/index.json     the last copy fetched of a remote index, used for search and install
    <cache>/indexes/<name>/meta.json      its ETag / Last-Modified (for conditional requests) and when it came
    <cache>/archives/<sha256>.<suffix>    archives already downloaded and verified (reused offline)

A local index (a folder, a file or a `file://` URL: a checkout, a mirror on a disk) is read where it is, every
time. A remote one (http or https) is read from its cached copy; `index update` refreshes that copy with a
conditional request (If-None-Match / If-Modified-Since), so an unchanged index costs one small answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, Field

from plugins.atomic_files import atomic_path, write_atomic
from plugins.progress import Progress, ProgressEvent
from registry.community.errors import IndexRefused, IndexUnavailable
from registry.community.format import INDEX_FILE, MAX_INDEX_BYTES, archive_suffix, parse_document
from registry.files import sha256_file, utc_now

SOURCES_FILE = "indexes.json"
CACHE_INDEXES = "indexes"
CACHE_ARCHIVES = "archives"
META_FILE = "meta.json"
TIMEOUT_S = 30
_CHUNK = 1 << 20
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
USER_AGENT = "diffplugin-index-client/1"


def is_remote(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class IndexSource(BaseModel):
    """One index the user added."""

    name: str = Field(description="What the user calls it: lower case letters, digits, '-' and '_'.")
    location: str = Field(description="The index document: an http(s) URL or an absolute path to index.json.")
    key: str | None = Field(None, description="When set, every entry must be signed by this key.")
    require_signatures: bool = Field(description="Unsigned entries are refused (the default for remote indexes).")
    added: str

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    def archive_location(self, url: str) -> str:
        """An entry's archive URL as a location to read: relative ones are relative to the index document."""
        if is_remote(url):
            return url
        if self.remote:
            return urllib.parse.urljoin(self.location, urllib.parse.quote(url))
        return str(Path(self.location).parent / url)


class _SourcesFile(BaseModel):
    indexes: list[IndexSource] = Field(default_factory=list)


class _Meta(BaseModel):
    location: str
    fetched: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class Fetched:
    """An index document's bytes and where they came from."""

    data: bytes
    how: str  # "local", "downloaded", "not modified", "cached"
    fetched: str | None  # when the cached copy was last confirmed (remote indexes)


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise IndexRefused(f"'{name}' is not an index name: use lower case letters, digits, '-' and '_' (at most "
                           "40), e.g. community")
    return name


def normalise_location(text: str) -> str:
    """An index location as given (a folder, its index.json, a file:// or http(s) URL) as the document's URL or
    absolute path."""
    if is_remote(text):
        parsed = urllib.parse.urlsplit(text)
        if not parsed.hostname:
            raise IndexRefused(f"'{text}' is not a usable URL (no host)")
        if parsed.path.endswith(".json"):
            return text
        return urllib.parse.urlunsplit(parsed._replace(path=parsed.path.rstrip("/") + "/" + INDEX_FILE))
    if text.startswith("file://"):
        text = urllib.request.url2pathname(urllib.parse.urlsplit(text).path)
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]+://", text):
        raise IndexRefused(f"'{text}': only http(s) URLs, file:// URLs and folders can be indexes")
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        path = path / INDEX_FILE
    if not path.is_file():
        raise IndexUnavailable(f"{path}: no such index file (an index folder holds {INDEX_FILE})")
    return str(path)


def _open_url(location: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    request = urllib.request.Request(location, headers={"User-Agent": USER_AGENT, **(headers or {})})
    response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # http(s) URLs only
    return response


def _unreachable(location: str, err: Exception) -> IndexUnavailable:
    if isinstance(err, urllib.error.HTTPError):
        return IndexUnavailable(f"{location}: the server answered {err.code} {err.reason}")
    reason = getattr(err, "reason", None) or getattr(err, "strerror", None) or err
    return IndexUnavailable(f"{location}: cannot be reached ({reason})")


def _strong_date(headers: Message) -> str | None:
    """Last-Modified, when usable for If-Modified-Since. HTTP dates count whole seconds: a document served in the
    second it changed may change again within that second and keep its date, so such a date is not kept."""
    modified, date = headers.get("Last-Modified"), headers.get("Date")
    try:
        if modified and date and (parsedate_to_datetime(date) - parsedate_to_datetime(modified)
                         ).total_seconds() >= 2:
            return modified
    except (TypeError, ValueError):
        pass
    return None


def _read_bounded(stream: BinaryIO, limit: int, location: str) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise IndexRefused(f"{location}: larger than {limit:,} bytes, the most an index may be")
    return data


class Sources:
    """The configured indexes (in `config_dir`) and what was fetched from them (in `cache_dir`)."""

    def __init__(self, config_dir: Path, cache_dir: Path) -> None:
        self.config_dir = Path(config_dir)
        self.cache_dir = Path(cache_dir)

    # ------------------------------------------------------------------ configuration
    @property
    def sources_file(self) -> Path:
        return self.config_dir / SOURCES_FILE

    def all(self) -> list[IndexSource]:
        try:
            return _SourcesFile.model_validate_json(self.sources_file.read_bytes()).indexes
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not the expected JSON"
            raise IndexRefused(f"{self.sources_file}: damaged ({reason}); move it away and add the indexes "
                               "again") from None

    def get(self, name: str) -> IndexSource:
        found = next((s for s in self.all() if s.name == name), None)
        if found is None:
            known = ", ".join(s.name for s in self.all()) or "none"
            raise IndexRefused(f"no index named '{name}' (added: {known}); see `diffplugin index list`")
        return found

    def save(self, sources: list[IndexSource]) -> None:
        text = _SourcesFile(indexes=sources).model_dump_json(indent=2)
        write_atomic(self.sources_file, text.encode(), durable=True)

    def cache_folder(self, name: str) -> Path:
        return self.cache_dir / CACHE_INDEXES / name

    def forget(self, name: str) -> None:
        """Remove the cached copy of an index (after `index remove`)."""
        folder = self.cache_folder(name)
        for file in (folder / INDEX_FILE, folder / META_FILE):
            file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()

    # ------------------------------------------------------------------ index documents
    def read(self, source: IndexSource) -> Fetched:
        """The document to use now: a local one as it is, a remote one's cached copy (fetched if there is none)."""
        if not source.remote:
            return Fetched(self._read_local(source.location), "local", None)
        folder = self.cache_folder(source.name)
        try:
            meta = _Meta.model_validate_json((folder / META_FILE).read_bytes())
            if meta.location == source.location:
                return Fetched((folder / INDEX_FILE).read_bytes(), "cached", meta.fetched)
        except (OSError, ValueError):
            pass
        return self.refresh(source)

    def refresh(self, source: IndexSource) -> Fetched:
        """Fetch the document anew (a remote one with a conditional request). New bytes that are not an index are
        refused before they could replace a good cached copy."""
        if not source.remote:
            return Fetched(self._read_local(source.location), "local", None)
        folder = self.cache_folder(source.name)
        meta = None
        with contextlib.suppress(OSError, ValueError):
            meta = _Meta.model_validate_json((folder / META_FILE).read_bytes())
        cached = folder / INDEX_FILE
        headers = {}
        if meta is not None and meta.location == source.location and cached.is_file():
            if meta.etag:
                headers["If-None-Match"] = meta.etag
            if meta.last_modified:
                headers["If-Modified-Since"] = meta.last_modified
        try:
            with _open_url(source.location, headers) as answer:
                data = _read_bounded(answer, MAX_INDEX_BYTES, source.location)
                etag, modified = answer.headers.get("ETag"), _strong_date(answer.headers)
        except urllib.error.HTTPError as err:
            if err.code == 304 and headers and meta is not None:  # headers are only sent with a cached `meta`
                meta = meta.model_copy(update={"fetched": utc_now()})
                write_atomic(folder / META_FILE, meta.model_dump_json().encode(), durable=True)
                return Fetched(cached.read_bytes(), "not modified", meta.fetched)
            raise _unreachable(source.location, err) from None
        except (urllib.error.URLError, OSError) as err:
            raise _unreachable(source.location, err) from None
        parse_document(data, source.location)
        fetched = utc_now()
        write_atomic(cached, data, durable=True)
        meta = _Meta(location=source.location, fetched=fetched, etag=etag, last_modified=modified)
        write_atomic(folder / META_FILE, meta.model_dump_json().encode(), durable=True)
        return Fetched(data, "downloaded", fetched)

    @staticmethod
    def _read_local(location: str) -> bytes:
        try:
            with open(location, "rb") as f:
                return _read_bounded(f, MAX_INDEX_BYTES, location)
        except OSError as err:
            raise IndexUnavailable(f"{location}: cannot be read ({err.strerror or err})") from None

    # ------------------------------------------------------------------ archives
    def cached_archive(self, sha256: str, suffix: str) -> Path:
        return self.cache_dir / CACHE_ARCHIVES / f"{sha256}{suffix}"

    def download(self, source: IndexSource, urls: list[str], size: int, sha256: str, label: str,
                 progress: Progress | None = None) -> Path:
        """The archive, verified: its size and SHA-256 are those of the entry, or it is refused and nothing is
        kept. A copy verified before is reused (and checked again); otherwise each URL is tried in turn."""
        suffix = archive_suffix(urls[0]) or ".tar.gz"
        target = self.cached_archive(sha256, suffix)
        if target.is_file():
            if target.stat().st_size == size and sha256_file(target) == sha256:
                if progress:
                    progress(ProgressEvent("download", size, size, label))
                return target
            target.unlink(missing_ok=True)  # damaged cache: fetch it again
        problems = []
        for url in urls:
            location = source.archive_location(url)
            if source.remote and not is_remote(location):
                raise IndexRefused(f"{label}: a remote index may not point at local files ({url})")
            try:
                return self._fetch_archive(location, size, sha256, target, label, progress)
            except IndexUnavailable as err:
                problems.append(str(err))
        raise IndexUnavailable(f"{label}: no archive could be downloaded ({'; '.join(problems)})")

    def _fetch_archive(self, location: str, size: int, sha256: str, target: Path, label: str,
                       progress: Progress | None) -> Path:
        with atomic_path(target) as tmp:
            with tmp.open("wb") as out:
                try:
                    stream = _open_url(location) if is_remote(location) else open(location, "rb")  # noqa: SIM115
                except (urllib.error.URLError, OSError) as err:
                    raise _unreachable(location, err) from None
                with stream:
                    declared = getattr(stream, "headers", {}).get("Content-Length")
                    if declared and declared.isdigit() and int(declared) != size:
                        raise IndexRefused(f"{label}: the archive is {int(declared):,} bytes, its entry says "
                                           f"{size:,}; refused, nothing installed")
                    digest, done = hashlib.sha256(), 0
                    if progress:
                        progress(ProgressEvent("download", 0, size, label))
                    try:
                        while block := stream.read(_CHUNK):
                            done += len(block)
                            if done > size:
                                raise IndexRefused(f"{label}: the archive is larger than the {size:,} bytes its "
                                                   "entry says; refused, nothing installed")
                            digest.update(block)
                            out.write(block)
                            if progress:
                                progress(ProgressEvent("download", done, size, label))
                    except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
                        raise _unreachable(location, err) from None
            if done != size:
                raise IndexRefused(f"{label}: the archive is {done:,} bytes, its entry says {size:,}; refused, "
                                   "nothing installed")
            if digest.hexdigest() != sha256:
                raise IndexRefused(f"{label}: the archive's SHA-256 is {digest.hexdigest()}, its entry says "
                                   f"{sha256}; it was changed or damaged; refused, nothing installed")
        return target

