"""Search: ranked by meaning, kept in step with installs, rebuilt when missing or damaged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def test_quieting_transformers_for_minilm_leaves_the_progress_bars_as_they_were() -> None:
    """In a fresh interpreter without the suite's HF_HUB_DISABLE_PROGRESS_BARS: the switch is one for the whole
    process, so a download or a model loaded after a search must find its bar on again, and off if it was off."""
    script = """
from huggingface_hub.utils.tqdm import are_progress_bars_disabled
from transformers.utils import logging
from registry.embedding import quiet_transformers

with quiet_transformers():
    assert not logging.is_progress_bar_enabled() and are_progress_bars_disabled()
assert logging.is_progress_bar_enabled() and not are_progress_bars_disabled()
logging.disable_progress_bar()
with quiet_transformers():
    pass
assert not logging.is_progress_bar_enabled() and are_progress_bars_disabled()
"""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
