"""Loaded plugins kept in memory, least recently used first out, within a byte budget.

A Task-Plugin is ~15 M parameters: loading it means reading and hashing ~60 MB. Keeping the ones in use
resident makes switching plugins cheap while the base model stays loaded. An entry is keyed by the plugin's id,
version and weight hashes, so a reinstalled or upgraded plugin is never served stale.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from assistant.executor import LoadedPlugin
    from registry.store import PluginStatus

#: Default budget: room for about a dozen Task-Plugins in fp32.
DEFAULT_MAX_BYTES = 800 * 2**20


def plugin_bytes(plugin: object) -> int:
    """Memory held by a loaded plugin's tensors (0 for code plugins)."""
    modules = [getattr(plugin, name, None) for name in ("tpb", "scb")]
    return sum(p.numel() * p.element_size() for m in modules if m is not None for p in m.parameters())


class PluginCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[LoadedPlugin, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def get(self, key: Hashable, load: Callable[[], LoadedPlugin]) -> LoadedPlugin:
        """The cached plugin for `key`, or `load()`'s result, cached if it fits the budget."""
        if key in self._entries:
            self._entries.move_to_end(key)
            self.hits += 1
            return self._entries[key][0]
        self.misses += 1
        plugin = load()
        size = plugin_bytes(plugin)
        if size <= self.max_bytes:
            self._entries[key] = (plugin, size)
            while self.bytes > self.max_bytes:
                self._entries.popitem(last=False)
        return plugin


def folder_key(folder: Path) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """What identifies a plugin folder's bytes cheaply: its path and each file's size and modification time."""
    folder = folder.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return (str(folder), tuple((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def cache_key(status: PluginStatus) -> tuple[str, str, str, tuple[str, ...]]:
    """What identifies a registered plugin's bytes: id, version, source and the SHA-256 of each weight file."""
    manifest = status.active.manifest
    return (status.id, manifest.version, status.active.source, tuple(w.sha256 for w in manifest.weights))
