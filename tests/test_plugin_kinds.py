"""Plugin kinds: the registry and the executor ask the manifest's kind, so a kind registered later is dispatched
to as the built-in ones are, and a kind no code handles is refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import PIL.Image
import pytest

from assistant.planning.llm import plugin_options
from assistant.plugin_status import state_word
from registry import kinds
from registry.discover import BUILTIN_CODE, PluginRecord
from registry.errors import InstallRefused, ManifestError
from registry.kinds import OptionValue, UnknownKind, kind_for, register_kind
from registry.manifest import PluginManifest, dump_manifest, load_manifest, parse_manifest
from registry.runtime import PythonPlugin, load_plugin, runnable_status
from registry.store import Registry


class LutKind:
    """A made-up third kind: a colour look-up table applied by this test's own code."""

    name = "lut"
    diffusion = False

    def __init__(self, runs_code: bool) -> None:
        self.runs_code = runs_code
        self.calls: list[tuple[str, Path]] = []

    def manifest_problem(self, manifest: PluginManifest) -> str | None:
        return None

    def check_files(self, manifest: PluginManifest, folder: Path) -> None:
        self.calls.append(("check_files", folder))

    def pulled_folder(self, manifest: PluginManifest, models_dir: Path) -> Path:
        return models_dir / "luts"

    def pulled_problems(self, manifest: PluginManifest, models_dir: Path) -> list[str]:
        return []

    def options(self, manifest: PluginManifest) -> dict[str, OptionValue]:
        return {"table": "warm"}

    def load(self, record: PluginRecord, weights_folder: Path, dtype: object) -> PythonPlugin:
        self.calls.append(("load", weights_folder))
        return PythonPlugin(record.manifest, lambda image, **options: image.transpose(PIL.Image.Transpose.ROTATE_90))


@pytest.fixture
def own_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kinds registered as the project has them; a test's own kind is gone after it."""
    kind_for("python")  # the built-in kinds register on the first lookup
    monkeypatch.setattr(kinds, "_KINDS", dict(kinds._KINDS))


def registry_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> tuple[Registry, PluginRecord]:
    """A registry holding one installed plugin whose manifest names `kind` (the manifest format has no such kind
    yet, so the manifest is built past validation, as a newer format would give it)."""
    manifest = load_manifest(BUILTIN_CODE / "manifests" / "contrast.yaml")
    manifest = manifest.model_copy(update={"id": "acme/lut", "kind": kind, "python": None})
    record = PluginRecord(manifest, tmp_path / "acme-lut", "installed")
    record.folder.mkdir()
    registry = Registry(tmp_path / "registry", models_dir=tmp_path / "models", entry_points=False)
    monkeypatch.setattr(registry.catalogue, "records", lambda: [record])
    return registry, record


@pytest.mark.usefixtures("own_kinds")
def test_a_registered_kind_is_dispatched_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lut = register_kind(LutKind(runs_code=False))
    registry, record = registry_with(tmp_path, monkeypatch, "lut")

    assert kind_for(record.manifest) is lut
    status = registry.get("acme/lut")
    assert status.trusted and status.runnable  # no code of its own: no trust asked
    assert state_word(status, base_pulled=False) == "ready"  # not a diffusion kind: no base model needed
    assert plugin_options(record.manifest) == {"table": "warm"}

    plugin = load_plugin(registry, "acme/lut")
    assert isinstance(plugin, PythonPlugin)
    assert plugin(PIL.Image.new("RGB", (4, 2))).size == (2, 4)
    assert lut.calls == [("load", record.folder)]

    registry.installer.check_files(record, trust=False)  # an install's checks ask the kind about its files
    assert lut.calls[-1] == ("check_files", record.folder)


@pytest.mark.usefixtures("own_kinds")
def test_a_kind_that_runs_code_needs_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    register_kind(LutKind(runs_code=True))
    registry, record = registry_with(tmp_path, monkeypatch, "lut")

    assert not registry.get("acme/lut").trusted
    with pytest.raises(InstallRefused, match="runs its own code and is not trusted yet"):
        runnable_status(registry, "acme/lut")
    with pytest.raises(InstallRefused, match="lut plugins run their own code on your machine"):
        registry.installer.check_files(record, trust=False)


@pytest.mark.usefixtures("own_kinds")
def test_a_second_kind_under_a_taken_name_is_refused() -> None:
    impostor = LutKind(runs_code=False)
    impostor.name = "python"
    with pytest.raises(ValueError, match="a plugin kind 'python' is registered already"):
        register_kind(impostor)
    assert kind_for("python") is not impostor


def test_an_unknown_kind_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry, _ = registry_with(tmp_path, monkeypatch, "hologram")
    with pytest.raises(UnknownKind) as refused:
        registry.get("acme/lut")
    message = str(refused.value)
    assert "\n" not in message
    assert "no plugin kind 'hologram' is known here (known: diffplugin, python" in message

    # A manifest file is refused before that: its format names the kinds it has (a Literal in the schema).
    text = dump_manifest(load_manifest(BUILTIN_CODE / "manifests" / "contrast.yaml")).replace(
        "kind: python", "kind: hologram")
    with pytest.raises(ManifestError) as bad:
        parse_manifest(text, "hologram.yaml")
    assert bad.value.field == "kind" and "\n" not in str(bad.value)


def test_listing_plugins_loads_the_kinds_but_not_torch(tmp_path: Path) -> None:
    code = ("import sys; from registry.store import Registry; "
            f"statuses = Registry({str(tmp_path)!r}).plugins(); "
            "assert {s.manifest.kind for s in statuses} == {'diffplugin', 'python'}; "
            "assert 'plugins.diffplugin.kind' in sys.modules; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
