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
from registry.installer import Installer
from registry.runtime import PythonPlugin, load_plugin
from registry.store import Registry
from tests.conftest import photo_array
from tests.plugin_folders import diffplugin_folder, python_folder


def snapshot(root: Path) -> dict[str, str]:
    """Every file (with its SHA-256) and every folder under `root`."""
    return {str(p.relative_to(root)): sha256_file(p) if p.is_file() else "folder" for p in sorted(root.rglob("*"))}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A registry with history: one plugin installed in two versions, one disabled, so a refusal that touched
    state.json, the store or the staging area would show in a snapshot."""
    reg = Registry(tmp_path / "registry", models_dir=tmp_path / "models")
    reg.install(python_folder(tmp_path / "existing-1"), trust=True)
    reg.install(python_folder(tmp_path / "existing-2", version="1.5.0"), trust=True)
    reg.disable("acme/sharpen")
    return reg


@pytest.fixture
def empty_registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "empty-registry", models_dir=tmp_path / "models")


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


def test_python_plugins_need_trust_which_is_recorded(empty_registry, tmp_path) -> None:
    registry = empty_registry
    folder = python_folder(tmp_path / "sharpen")
    error = refused(registry, folder, "run their own code")
    assert not registry.root.exists()  # a registry created for a refused install is removed again
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
                                    "namespace", "models-pull", "symlink", "no-module", "renamed-pickle",
                                    "shard-index", "fifo"])
def test_unsafe_or_broken_plugins_are_refused(registry, tiny_folder, tmp_path, damage) -> None:
    folder = tiny_folder
    manifest = folder / "diffplugin.yaml"
    text = manifest.read_text()
    expect, field = {
        "pickle": ("pickled files", None), "not-safetensors": ("not a safetensors file", None),
        "sha": ("SHA-256 mismatch", "weights.0.sha256"), "missing-weight": ("which is missing", "weights.1.path"),
        "missing-config": (r"scb/config\.json: missing", None), "namespace": ("reserved", "id"),
        "models-pull": ("only built-in", "weights_source"), "symlink": ("symbolic links", None),
        "no-module": ("not in the plugin folder", "python.entry_point"),
        "renamed-pickle": ("torch checkpoints", None), "shard-index": ("sharded weights", None),
        "fifo": ("only plain files", None),
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
        folder = python_folder(tmp_path / "sharpen", version="9.0.0")
        (folder / "acme_sharpen.py").unlink()
    elif damage == "renamed-pickle":
        torch.save({"w": torch.zeros(1)}, folder / "weights.dat")
    elif damage == "shard-index":
        (folder / "tpb" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    elif damage == "fifo":
        os.mkfifo(folder / "pipe")
    error = refused(registry, folder, expect, trust=True)
    if field:
        assert error.field == field
    assert str(tmp_path) in str(error) and ".staging" not in str(error)


def test_trust_is_per_version(empty_registry, tmp_path) -> None:
    registry = empty_registry
    registry.install(python_folder(tmp_path / "a"), trust=True)
    registry.install(python_folder(tmp_path / "b", version="2.0.0"), trust=True)
    state = registry.load_state()
    state.plugins["acme/sharpen"].trust.pop("2.0.0 installed")  # as if 2.0.0 had arrived untrusted
    registry.state.save(state)
    assert registry.get("acme/sharpen", "1.0.0").trusted and not registry.get("acme/sharpen").trusted
    with pytest.raises(InstallRefused, match=r"acme/sharpen@2\.0\.0' runs its own code"):
        load_plugin(registry, "acme/sharpen")
    assert load_plugin(registry, "acme/sharpen", "1.0.0")


def test_versions_that_differ_only_in_spelling_are_the_same(empty_registry, tmp_path) -> None:
    registry = empty_registry
    registry.install(python_folder(tmp_path / "a"), trust=True)
    refused(registry, python_folder(tmp_path / "b", version='"1.0"'), "already installed", trust=True)
    refused(registry, python_folder(tmp_path / "c", version="2.10"), r"put the version in quotes", trust=True)


def test_two_versions_with_the_same_module_name_run_their_own_code(empty_registry, tmp_path) -> None:
    registry = empty_registry
    for version, factor in (("1.0.0", 0), ("2.0.0", 1)):
        folder = python_folder(tmp_path / version, version=version)
        (folder / "acme_sharpen.py").write_text(
            "from PIL import Image\n\n\ndef sharpen(image, **options):\n"
            f"    return Image.new('RGB', image.size, ({255 * factor},) * 3)\n")
        registry.install(folder, trust=True)
    image = PIL.Image.new("RGB", (4, 4), (100, 100, 100))
    assert load_plugin(registry, "acme/sharpen", "1.0.0")(image).getpixel((0, 0)) == (0, 0, 0)
    assert load_plugin(registry, "acme/sharpen", "2.0.0")(image).getpixel((0, 0)) == (255, 255, 255)


def test_concurrent_installs_do_not_lose_each_other(empty_registry, tmp_path, monkeypatch) -> None:
    import threading
    import time

    registry = empty_registry
    registry.root.mkdir()
    original = Installer.check_files

    def slow_check(self, record, trust) -> None:  # widen the window in which two installs could interleave
        original(self, record, trust)
        time.sleep(0.3)

    monkeypatch.setattr(Installer, "check_files", slow_check)
    folders = [python_folder(tmp_path / "one"), python_folder(tmp_path / "two", version="2.0.0")]
    manifest = folders[1] / "diffplugin.yaml"
    manifest.write_text(manifest.read_text().replace("id: acme/sharpen", "id: acme/sharpen-two"))
    errors: list[BaseException] = []

    def install(folder: Path) -> None:
        try:
            Registry(registry.root, registry.models_dir).install(folder, trust=True)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=install, args=(f,)) for f in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = registry.load_state()
    assert sorted(state.plugins) == ["acme/sharpen", "acme/sharpen-two"] and state.generation == 2
    assert all(registry.get(p).trusted for p in state.plugins)


def test_versions_side_by_side_one_active(empty_registry, tmp_path) -> None:
    registry = empty_registry
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


def test_disabled_plugins_do_not_run(empty_registry, tmp_path) -> None:
    registry = empty_registry
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
    refused(registry, big, "more than 3 members", limits=ArchiveLimits(max_members=3))

    liar = tmp_path / "liar.zip"  # a header that claims 10 bytes for a 5000-byte member
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_STORED) as zf:
        for name, data in _folder_members(tiny_folder).items():
            zf.writestr(name, data)
        zf.writestr("huge.txt", b"0" * 5000)
    raw = bytearray(liar.read_bytes())
    for marker in (b"PK\x03\x04", b"PK\x01\x02"):  # local and central headers of huge.txt
        start = raw.rfind(marker)
        offset = 22 if marker == b"PK\x03\x04" else 24
        raw[start + offset:start + offset + 4] = (10).to_bytes(4, "little")
    liar.write_bytes(bytes(raw))
    refused(registry, liar, "oversized|not a readable zip", limits=ArchiveLimits(max_member_bytes=4096))

    for kind, match in ((tarfile.LNKTYPE, "is a link"), (tarfile.CHRTYPE, "special file")):
        odd = tmp_path / f"odd-{kind!r}.tar"
        with tarfile.open(odd, "w") as tf:
            tf.add(tiny_folder, arcname=".")
            member = tarfile.TarInfo("odd")
            member.type, member.linkname = kind, "diffplugin.yaml"
            tf.addfile(member)
        refused(registry, odd, match)

    windows = _zip(tmp_path / "win.zip", {**_folder_members(tiny_folder), "..\\..\\evil.txt": b"x"})
    refused(registry, windows, "climbs out")
    drive = _zip(tmp_path / "drive.zip", {**_folder_members(tiny_folder), "C:\\evil.txt": b"x"})
    refused(registry, drive, "absolute path")

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

    def disk_full(src, dst) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("registry.state.os.replace", disk_full)  # the real save runs up to its final rename
    with pytest.raises(OSError, match="disk full"):
        registry.install(python_folder(tmp_path / "p", version="3.0.0"), trust=True)
    assert snapshot(registry.root) == before


def test_an_unreadable_manifest_is_named_not_a_crash(registry, tmp_path) -> None:
    folder = python_folder(tmp_path / "latin1", version="7.0.0")
    (folder / "diffplugin.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    refused(registry, folder, "cannot be read as UTF-8", trust=True)
    installed = registry.get("acme/sharpen", "1.5.0").active.folder / "diffplugin.yaml"
    installed.write_bytes(b"\xff\xfe broken")
    assert [s.id for s in registry.plugins() if s.id == "acme/sharpen"] == ["acme/sharpen"]  # 1.0.0 still listed
    assert any("installed copy damaged" in e and str(installed) in e for e in registry.discovery_errors())


def test_damaged_state_file_is_reported(registry) -> None:
    registry.state_file.write_text("{not json")
    with pytest.raises(RegistryError, match=r"state\.json: damaged"):
        registry.plugins()


def test_validate_checks_without_installing(registry, tiny_folder, tmp_path) -> None:
    before = snapshot(registry.root)
    manifest, warnings = registry.validate(tiny_folder)
    assert manifest.id == "acme/derain-tiny" and warnings == []
    assert registry.validate(_zip(tmp_path / "p.zip", _folder_members(tiny_folder)))[0].id == "acme/derain-tiny"
    assert snapshot(registry.root) == before
    registry.install(tiny_folder)
    assert registry.validate(tiny_folder)[0].version == "1.0.0"  # an installed copy is not a validation error
    (tiny_folder / "tpb" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    with pytest.raises(InstallRefused, match="not a safetensors file"):
        registry.validate(tiny_folder)


def test_non_commercial_licence_warns(registry, tmp_path, tiny_pipe) -> None:
    folder = diffplugin_folder(tmp_path / "nc", tiny_pipe, license_id="CC-BY-NC-SA-4.0")
    assert registry.install(folder).warnings == ["acme/derain-tiny: licence CC-BY-NC-SA-4.0 forbids commercial use"]
