"""Plugins exposed by pip-installed packages: found through entry points, never imported to be listed."""

from __future__ import annotations

import builtins
import shutil
import sys
from pathlib import Path

import pytest

from registry.errors import InstallRefused
from registry.runtime import load_plugin
from registry.store import Registry
from tests.plugin_folders import EXAMPLE_PLUGIN, python_folder

PACKAGE = "acme_ep_sharpen"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake installed distribution with a plugin entry point, as pip would leave it."""
    site = tmp_path / "site"
    package = site / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import builtins\nbuiltins._acme_ep_imported = True\n")
    shutil.copy(EXAMPLE_PLUGIN / "acme_sharpen.py", package / "run.py")
    manifest = (EXAMPLE_PLUGIN / "diffplugin.yaml").read_text()
    manifest = manifest.replace("id: acme/sharpen", "id: acme/ep-sharpen").replace(
        '"acme_sharpen:sharpen"', f'"{PACKAGE}.run:sharpen"')
    (package / "diffplugin.yaml").write_text(manifest)
    (package / "broken").mkdir()
    (package / "broken" / "bad.yaml").write_text("id: not-namespaced\n")
    dist = site / "acme_ep_sharpen-2.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ep-sharpen\nVersion: 2.0.0\n")
    (dist / "entry_points.txt").write_text(
        f"[diffplugin.plugins]\nsharpen = {PACKAGE}:diffplugin.yaml\nbroken = {PACKAGE}:broken\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delattr(builtins, "_acme_ep_imported", raising=False)
    yield site
    sys.modules.pop(PACKAGE, None)
    sys.modules.pop(f"{PACKAGE}.run", None)


def test_entry_point_plugins_are_listed_without_importing_them(site, tmp_path) -> None:
    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    status = registry.get("acme/ep-sharpen")
    assert status.active.source == "entry-point" and status.active.distribution == "acme-ep-sharpen"
    assert status.active.folder == (site / PACKAGE).resolve()
    assert not status.trusted and not status.runnable  # third-party code: trust first
    assert any("broken" in e and "namespace/name" in e for e in registry.discovery_errors())
    assert PACKAGE not in sys.modules and not hasattr(builtins, "_acme_ep_imported")

    with pytest.raises(InstallRefused, match="not trusted yet"):
        load_plugin(registry, "acme/ep-sharpen")
    assert registry.enable("acme/ep-sharpen", trust=True).trust.how == "enable --trust"
    plugin = load_plugin(registry, "acme/ep-sharpen")
    assert plugin.manifest.id == "acme/ep-sharpen" and builtins._acme_ep_imported


def test_an_install_cannot_shadow_a_package_plugin(site, tmp_path) -> None:
    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    folder = python_folder(tmp_path / "copy")
    manifest = folder / "diffplugin.yaml"
    manifest.write_text(manifest.read_text().replace("id: acme/sharpen", "id: acme/ep-sharpen"))
    with pytest.raises(InstallRefused, match="already provided by the package 'acme-ep-sharpen'"):
        registry.install(folder, trust=True)


def test_this_projects_plugins_arrive_through_the_same_entry_point(tmp_path) -> None:
    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    builtins_found = [s for s in registry.plugins() if s.active.source == "builtin"]
    assert {s.id for s in builtins_found} >= {f"diffplugin/{t}" for t in ("derain", "lowlight", "face")}
    assert all(s.active.distribution == "diffplugin-assistant" for s in builtins_found)
    # Both built-in folders: the official Diff-Plugins (weights pulled later) and the weight-free python ones,
    # which are trusted by location and run at once.
    classic = registry.get("diffplugin/dehaze-classic")
    assert classic.active.source == "builtin" and classic.trusted and classic.runnable
    assert {s.active.folder.name for s in builtins_found} == {"manifests"}
    assert len({s.active.folder for s in builtins_found}) == 2


def _fake_dist(site: Path, dist_name: str, folder_name: str, entry: str) -> None:
    dist = site / f"{folder_name}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 9.9.9\n")
    (dist / "entry_points.txt").write_text(f"[diffplugin.plugins]\n{entry}\n")


def test_a_package_cannot_pass_as_built_in_or_take_the_reserved_namespace(tmp_path, monkeypatch) -> None:
    site = tmp_path / "spoof-site"
    package = site / "spoof_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLE_PLUGIN / "acme_sharpen.py", package / "run.py")
    text = (EXAMPLE_PLUGIN / "diffplugin.yaml").read_text().replace('"acme_sharpen:sharpen"', '"spoof_pkg.run:sharpen"')
    (package / "mine.yaml").write_text(text.replace("id: acme/sharpen", "id: spoof/sharpen"))
    (package / "official.yaml").write_text(text.replace("id: acme/sharpen", "id: diffplugin/derain")
                                           .replace("version: 1.0.0", "version: 9.0.0"))
    _fake_dist(site, "diffplugin-assistant", "spoof-1.0", "a = spoof_pkg:mine.yaml\nb = spoof_pkg:official.yaml")
    monkeypatch.syspath_prepend(str(site))

    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    spoofed = registry.get("spoof/sharpen")
    assert spoofed.active.source == "entry-point" and not spoofed.trusted  # the package's name earns nothing
    assert registry.get("diffplugin/derain").versions == ["1.0.0"]
    assert any("reserved" in e for e in registry.discovery_errors())


def test_finding_a_package_resource_runs_none_of_its_code(tmp_path, monkeypatch) -> None:
    """The metadata lives apart from the package (as in editable installs), so discovery must look the package
    up: it may find it, but must not import `outer/__init__.py` to reach `outer.inner`."""
    code_site, meta_site = tmp_path / "code", tmp_path / "meta"
    inner = code_site / "outer_pkg" / "inner"
    inner.mkdir(parents=True)
    (code_site / "outer_pkg" / "__init__.py").write_text("import builtins\nbuiltins._outer_imported = True\n")
    (inner / "__init__.py").write_text("import builtins\nbuiltins._outer_imported = True\n")
    shutil.copy(EXAMPLE_PLUGIN / "acme_sharpen.py", inner / "run.py")
    text = (EXAMPLE_PLUGIN / "diffplugin.yaml").read_text()
    (inner / "diffplugin.yaml").write_text(text.replace("id: acme/sharpen", "id: acme/inner")
                                           .replace('"acme_sharpen:sharpen"', '"outer_pkg.inner.run:sharpen"'))
    _fake_dist(meta_site, "outer-pkg", "outer_pkg-1.0", "inner = outer_pkg.inner:diffplugin.yaml")
    monkeypatch.syspath_prepend(str(code_site))
    monkeypatch.syspath_prepend(str(meta_site))
    monkeypatch.delattr(builtins, "_outer_imported", raising=False)

    registry = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    assert registry.get("acme/inner").active.folder == inner.resolve()
    assert not hasattr(builtins, "_outer_imported") and "outer_pkg" not in sys.modules
