"""Installing, versioning, trusting and loading plugins; every refusal leaves the registry unchanged."""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from registry.errors import InstallRefused, ManifestError, PluginNotFound, RegistryError
from registry.files import ArchiveLimits, sha256_file
from registry.runtime import PythonPlugin, load_plugin
from registry.store import Registry
from tests.conftest import photo_array
from tests.plugin_folders import diffplugin_folder, python_folder


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry", models_dir=tmp_path / "models")
    reg.root.mkdir()
    return reg


@pytest.fixture
def tiny_folder(tmp_path: Path, tiny_pipe) -> Path:
    return diffplugin_folder(tmp_path / "derain-tiny", tiny_pipe)


def refused(registry: Registry, source: Path, match: str, **kwargs) -> InstallRefused | ManifestError:
    """Install must fail with `match` in the message and leave every file of the registry as it was."""
    before = snapshot(registry.root)
    with pytest.raises((InstallRefused, ManifestError), match=match) as info:
        registry.install(source, **kwargs)
    assert snapshot(registry.root) == before
    return info.value


def test_a_diffplugin_plugin_installs_lists_verifies_and_runs(registry, tiny_folder, tiny_pipe, photo) -> None:
    result = registry.install(tiny_folder)
    assert result.record.id == "acme/derain-tiny" and result.warnings == []
    status = registry.get("acme/derain-tiny")
    assert status.runnable and status.active.source == "installed" and status.versions == ["1.0.0"]
    assert {s.id for s in registry.plugins()} >= {"acme/derain-tiny", "diffplugin/derain"}

    plugin = load_plugin(registry, "acme/derain-tiny")
    assert plugin.task == "derain" and plugin.settings.start == "noised-input"
    out = tiny_pipe(photo, plugin, num_inference_steps=2, short_side=32, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == photo.size


def test_weights_are_checked_again_when_loaded(registry, tiny_folder) -> None:
    record = registry.install(tiny_folder).record
    weights = record.folder / "scb" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(InstallRefused, match=r"SHA-256 mismatch") as info:
        load_plugin(registry, "acme/derain-tiny")
    assert info.value.field == "weights.0.sha256" and str(weights) in str(info.value)


def test_python_plugins_need_trust_which_is_recorded(registry, tmp_path) -> None:
    folder = python_folder(tmp_path / "sharpen")
    error = refused(registry, folder, "run their own code")
    assert error.field == "kind" and str(folder / "diffplugin.yaml") in str(error)

    registry.install(folder, trust=True)
    status = registry.get("acme/sharpen")
    assert status.trusted and status.trust.how == "install --trust" and status.trust.at
    plugin = load_plugin(registry, "acme/sharpen")
    assert isinstance(plugin, PythonPlugin)
    image = PIL.Image.fromarray(photo_array("astronaut", 64))
    sharpened = np.asarray(plugin(image), dtype=float)
    original = np.asarray(image, dtype=float)
    assert sharpened.shape == original.shape and np.abs(sharpened - original).mean() > 1
    assert np.asarray(plugin(image, percent=0), dtype=float).tolist() == original.tolist()


@pytest.mark.parametrize("damage", ["pickle", "not-safetensors", "sha", "missing-weight", "missing-config",
                                    "namespace", "models-pull", "symlink", "no-module"])
def test_unsafe_or_broken_plugins_are_refused(registry, tiny_folder, tmp_path, damage) -> None:
    folder = tiny_folder
    manifest = folder / "diffplugin.yaml"
    text = manifest.read_text()
    expect, field = {
        "pickle": ("pickled files", None), "not-safetensors": ("not a safetensors file", None),
        "sha": ("SHA-256 mismatch", "weights.0.sha256"), "missing-weight": ("which is missing", "weights.1.path"),
        "missing-config": ("missing", None), "namespace": ("reserved", "id"),
        "models-pull": ("only built-in", "weights_source"), "symlink": ("symbolic links", None),
        "no-module": ("not in the plugin folder", "python.entry_point"),
    }[damage]
    if damage == "pickle":
        torch.save({"w": torch.zeros(1)}, folder / "extra_weights.bin")
    elif damage == "not-safetensors":
        (folder / "notes.safetensors").write_bytes(b"\x00" * 20)
    elif damage == "sha":
        manifest.write_text(text.replace(text.split("sha256: ")[1][:64], "1" * 63 + "f", 1))
    elif damage == "missing-weight":
        (folder / "tpb" / "diffusion_pytorch_model.safetensors").unlink()
    elif damage == "missing-config":
        (folder / "scb" / "config.json").unlink()
    elif damage == "namespace":
        manifest.write_text(text.replace("id: acme/derain-tiny", "id: diffplugin/derain-tiny"))
    elif damage == "models-pull":
        manifest.write_text(text + "weights_source: models-pull\n")
    elif damage == "symlink":
        os.symlink("/etc/passwd", folder / "passwd")
    elif damage == "no-module":
        folder = python_folder(tmp_path / "sharpen")
        (folder / "acme_sharpen.py").unlink()
    error = refused(registry, folder, expect, trust=True)
    if field:
        assert error.field == field
    assert str(tmp_path) in str(error) and ".staging" not in str(error)


def test_versions_side_by_side_one_active(registry, tmp_path) -> None:
    registry.install(python_folder(tmp_path / "v1"), trust=True)
    registry.install(python_folder(tmp_path / "v11", version="1.1.0"), trust=True)
    assert registry.get("acme/sharpen").active.version == "1.1.0"
    assert registry.get("acme/sharpen").versions == ["1.0.0", "1.1.0"]
    refused(registry, python_folder(tmp_path / "again", version="1.1.0"), "already installed", trust=True)

    assert registry.enable("acme/sharpen", "1.0.0").active.version == "1.0.0"
    assert registry.remove("acme/sharpen", "1.0.0") == ["1.0.0"]
    assert registry.get("acme/sharpen").active.version == "1.1.0"
    assert registry.remove("acme/sharpen") == ["1.1.0"]
    with pytest.raises(PluginNotFound):
        registry.get("acme/sharpen")
    assert not (registry.root / "plugins" / "acme").exists()


def test_disabled_plugins_do_not_run(registry, tmp_path) -> None:
    registry.install(python_folder(tmp_path / "p"), trust=True)
    assert not registry.disable("acme/sharpen").enabled
    with pytest.raises(InstallRefused, match="disabled"):
        load_plugin(registry, "acme/sharpen")
    assert registry.enable("acme/sharpen").runnable


def test_builtin_plugins_cannot_be_removed_and_need_pulled_weights(registry) -> None:
    status = registry.get("diffplugin/lowlight")
    assert status.active.builtin and status.trusted and not status.runnable
    assert "diffplugin models pull --task lowlight" in status.problems[0]
    with pytest.raises(RegistryError, match="comes from the package 'diffplugin-assistant'"):
        registry.remove("diffplugin/lowlight")
    with pytest.raises(InstallRefused, match="weights not downloaded"):
        load_plugin(registry, "diffplugin/lowlight")


def test_builtin_plugin_runs_on_pulled_weights(registry, tiny_pipe, photo) -> None:
    from plugins.diffplugin.plugin import TaskPlugin

    TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "lowlight").save_pretrained(
        registry.models_dir / "plugins" / "lowlight")
    plugin = load_plugin(registry, "diffplugin/lowlight")
    assert plugin.settings.start == "noise"
    assert tiny_pipe(photo, plugin, num_inference_steps=1, short_side=32).images[0].size == photo.size


# ------------------------------------------------------------------------------------------------ archives
def _zip(path: Path, members: dict[str, bytes], symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def _folder_members(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_archives_install_from_zip_and_tar_gz(registry, tiny_folder, tmp_path) -> None:
    archive = _zip(tmp_path / "plugin.zip", _folder_members(tiny_folder, "derain-tiny/"))
    assert registry.install(archive).record.id == "acme/derain-tiny"
    registry.remove("acme/derain-tiny")
    tgz = tmp_path / "plugin.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tiny_folder, arcname=".")
    assert registry.install(tgz).record.version == "1.0.0"


@pytest.mark.parametrize(("member", "match"), [
    ("/abs/evil.txt", "absolute path"),
    ("../evil.txt", r"climbs out"),
    ("plugin/../../evil.txt", r"climbs out"),
])
def test_archive_members_that_escape_are_refused(registry, tiny_folder, tmp_path, member, match) -> None:
    archive = _zip(tmp_path / "evil.zip", {**_folder_members(tiny_folder), member: b"x"})
    error = refused(registry, archive, match)
    assert str(archive) in str(error)
    assert not (tmp_path / "evil.txt").exists()


def test_archive_links_special_files_and_oversized_members_are_refused(registry, tiny_folder, tmp_path) -> None:
    refused(registry, _zip(tmp_path / "link.zip", _folder_members(tiny_folder), symlink="passwd"), "symbolic link")

    tgz = tmp_path / "link.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(tiny_folder, arcname=".")
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
        fifo = tarfile.TarInfo("pipe")
        fifo.type = tarfile.FIFOTYPE
        tf.addfile(fifo)
    refused(registry, tgz, "is a link")

    big = _zip(tmp_path / "big.zip", {**_folder_members(tiny_folder), "huge.txt": b"0" * 5000})
    refused(registry, big, "oversized", limits=ArchiveLimits(max_member_bytes=4096))
    refused(registry, big, "exceed", limits=ArchiveLimits(max_total_bytes=10_000))

    fifo_only = tmp_path / "fifo.tar"
    with tarfile.open(fifo_only, "w") as tf:
        info = tarfile.TarInfo("pipe")
        info.type = tarfile.FIFOTYPE
        tf.addfile(info)
    refused(registry, fifo_only, "special file")


def test_archive_without_a_manifest_or_not_an_archive(registry, tmp_path) -> None:
    refused(registry, _zip(tmp_path / "empty.zip", {"readme.txt": b"hi"}), "no diffplugin.yaml")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    refused(registry, broken, "not a readable zip")
    refused(registry, tmp_path / "nothing-here", "no such file")


def test_failure_while_recording_state_leaves_nothing_installed(registry, tmp_path, monkeypatch) -> None:
    before = snapshot(registry.root)

    def broken_save(state) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(registry, "_save_state", broken_save)
    with pytest.raises(OSError, match="disk full"):
        registry.install(python_folder(tmp_path / "p"), trust=True)
    assert snapshot(registry.root) == before
    assert not (registry.root / "plugins" / "acme" / "sharpen").exists()


def test_damaged_state_file_is_reported(registry) -> None:
    registry.state_file.write_text("{not json")
    with pytest.raises(RegistryError, match=r"state\.json: damaged"):
        registry.plugins()


def test_validate_checks_without_installing(registry, tiny_folder) -> None:
    manifest, warnings = registry.validate(tiny_folder)
    assert manifest.id == "acme/derain-tiny" and warnings == []
    assert not (registry.root / "plugins").exists()
    (tiny_folder / "tpb" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    with pytest.raises(InstallRefused, match="not a safetensors file"):
        registry.validate(tiny_folder)


def test_non_commercial_licence_warns(registry, tmp_path, tiny_pipe) -> None:
    folder = diffplugin_folder(tmp_path / "nc", tiny_pipe, license_id="CC-BY-NC-SA-4.0")
    assert registry.install(folder).warnings == ["acme/derain-tiny: licence CC-BY-NC-SA-4.0 forbids commercial use"]
