"""Search: ranked by meaning, kept in step with installs, rebuilt when missing or damaged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from registry import index as index_module
from registry.store import Registry
from tests.plugin_folders import python_folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry", models_dir=tmp_path / "models")


@pytest.mark.parametrize(("request_text", "expected"), [
    ("there are rain streaks all over my picture", "diffplugin/derain"),
    ("it was shot at night and is far too dark", "diffplugin/lowlight"),
    ("the distant hills are lost in fog", "diffplugin/dehaze"),
    ("the screen photo has weird rainbow ripples", "diffplugin/demoire"),
])
def test_requests_find_the_right_builtin_plugin(registry, request_text, expected) -> None:
    hits = registry.search(request_text, limit=3)
    assert hits[0].id == expected, [(h.id, round(h.score, 3)) for h in hits]
    assert hits[0].score > hits[1].score and -1.0 <= hits[-1].score <= 1.0


def test_installs_and_disables_update_the_index_without_a_rebuild(registry, tmp_path, monkeypatch) -> None:
    registry.search("warm up")  # builds the index
    rebuilds = []
    monkeypatch.setattr(index_module.SearchIndex, "rebuild", lambda *a, **k: rebuilds.append(1))
    registry.install(python_folder(tmp_path / "p"), trust=True)
    assert registry.search("make my photo crisper", limit=1)[0].id == "acme/sharpen"
    registry.disable("acme/sharpen")
    assert "acme/sharpen" not in [h.id for h in registry.search("make my photo crisper", limit=10)]
    registry.enable("acme/sharpen")
    assert registry.search("make my photo crisper", limit=1)[0].id == "acme/sharpen"
    registry.remove("acme/sharpen")
    assert "acme/sharpen" not in [h.id for h in registry.search("crisper", limit=10)]
    assert rebuilds == []


def test_a_missing_or_damaged_index_is_rebuilt(registry) -> None:
    first = [h.id for h in registry.search("remove the snow")]
    index_folder = registry.root / "index"
    shutil.rmtree(index_folder)
    index_module.close_all()  # as a new process would find it
    assert [h.id for h in Registry(registry.root, registry.models_dir).search("remove the snow")] == first

    index_module.close_all()  # as a new process would find it
    for file in index_folder.rglob("*.sqlite3"):
        file.write_bytes(b"this is not a database" * 100)
    assert [h.id for h in Registry(registry.root, registry.models_dir).search("remove the snow")] == first


def test_reindex_and_empty_queries(registry) -> None:
    assert registry.reindex() == len([s for s in registry.plugins() if s.enabled])
    with pytest.raises(ValueError, match="empty"):
        registry.search("   ")
