"""The executor's plugin cache: a second load is served from memory, within a byte budget, never stale, and
never for a plugin that may no longer run."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.executor import Executor
from assistant.plugin_cache import PluginCache, plugin_bytes
from registry.errors import InstallRefused
from registry.store import Registry
from tests.plugin_folders import diffplugin_folder


def test_lru_within_the_budget(make_plugin) -> None:
    plugins = {name: make_plugin(seed=seed) for seed, name in enumerate("abc", start=1)}
    size = plugin_bytes(plugins["a"])
    assert size > 0
    cache = PluginCache(max_bytes=2 * size)
    loads: list[str] = []

    def loader(name):
        return lambda: loads.append(name) or plugins[name]

    for name in ("a", "b", "a", "c", "b"):
        cache.get((name,), loader(name))
    # a, b loaded; a hit; c evicts b (least recently used); b is loaded again and evicts a
    assert loads == ["a", "b", "c", "b"] and cache.hits == 1 and len(cache) == 2 and cache.bytes <= 2 * size
    too_small = PluginCache(max_bytes=size - 1)
    too_small.get(("a",), loader("a"))
    assert len(too_small) == 0  # a plugin bigger than the budget is used but not kept
    with pytest.raises(ValueError):
        PluginCache(max_bytes=-1)


def test_registered_plugins_are_cached_and_rechecked(tmp_path: Path, tiny_pipe) -> None:
    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    registry.install(diffplugin_folder(tmp_path / "p1", tiny_pipe))
    executor = Executor()
    first = executor.load("acme/derain-tiny", registry)
    assert executor.load("acme/derain-tiny", registry) is first and executor.plugins.hits == 1
    registry.install(diffplugin_folder(tmp_path / "p2", tiny_pipe, version="1.1.0"))
    upgraded = executor.load("acme/derain-tiny", registry)
    assert upgraded is not first  # a new version is new bytes: never served from the old entry
    registry.disable("acme/derain-tiny")
    with pytest.raises(InstallRefused, match="disabled"):
        executor.load("acme/derain-tiny", registry)
