"""Hardening of the registry (issue 16): bounded manifests, no shipped bytecode, no lookalike namespaces, an index
that is never seen half-built, staging that cleans up after killed installs, pickles found by content, and file
system errors as one line. Each test failed on the code before the fix."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import pickle
import py_compile
import threading
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from assistant.cli import app
from registry import index as index_module
from registry.errors import InstallRefused, ManifestError, RegistryError
from registry.files import ArchiveLimits, sha256_file
from registry.installer import Installer
from registry.manifest import MAX_EXAMPLES, MAX_MANIFEST_BYTES, load_manifest, parse_manifest, reserved_lookalike
from registry.runtime import load_plugin
from registry.store import Registry
from tests.conftest import photo_array
from tests.plugin_folders import NEGATIVE_CODE, NEGATIVE_MANIFEST, code_folder, python_folder


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256_file(p) if p.is_file() else "folder" for p in sorted(root.rglob("*"))}


def manifest_text(**changes: object) -> str:
    data = {**yaml.safe_load(NEGATIVE_MANIFEST), **changes}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not None}, sort_keys=False)


def code_plugin(dest: Path, **changes: object) -> Path:
    """The negative plugin with `changes` to its manifest."""
    folder = code_folder(dest)
    (folder / "diffplugin.yaml").write_text(manifest_text(**changes))
    return folder


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry", models_dir=tmp_path / "models")
    reg.install(python_folder(tmp_path / "existing"), trust=True)
    return reg


# ------------------------------------------------------------------------------------------------ H2
@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"examples": [f"remove the haze number {k}" for k in range(60)]}, "examples", f"at most {MAX_EXAMPLES}"),
    ({"examples": ["remove the haze", "x" * 5000, "clear the fog"]}, "examples.1", "at most 200"),
    ({"tasks": [f"task{k}" for k in range(100)]}, "tasks", "at most 16"),
    ({"license": "MIT " * 1000}, "license", "at most 100"),
    ({"authors": [{"name": "A" * 1000}]}, "authors.0.name", "at most 200"),
    ({"homepage": "https://example.org/" + "a" * 1000}, "homepage", "at most 500"),
    ({"python": {"entry_point": "negative:negative", "options": {f"o{k}": k for k in range(100)}}},
     "python.options", "at most 32"),
    ({"python": {"entry_point": "negative:negative", "options": {"mode": "x" * 5000}}}, "python.options.mode", None),
    ({"version": "1.0.0+" + "a" * 300}, "version", "at most 64"),
])
def test_every_list_and_string_of_a_manifest_is_bounded(changes, field, message) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(manifest_text(**changes), "big.yaml")
    assert info.value.field == field or info.value.field.startswith(field), info.value
    assert message is None or message in str(info.value)


def test_a_huge_manifest_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "big")
    examples = "".join(f"  - remove the haze, variant {k}\n" for k in range(100_000))  # ~3 MB
    (folder / "diffplugin.yaml").write_text(manifest_text(examples=None) + "examples:\n" + examples)
    assert (folder / "diffplugin.yaml").stat().st_size > MAX_MANIFEST_BYTES
    with pytest.raises(ManifestError, match=f"larger than {MAX_MANIFEST_BYTES:,} bytes"):
        load_manifest(folder)
    with pytest.raises(ManifestError, match="at most"):
        parse_manifest((folder / "diffplugin.yaml").read_text())


def test_a_plugin_with_thousands_of_examples_is_not_installed(registry: Registry, tmp_path: Path) -> None:
    folder = code_plugin(tmp_path / "many", examples=[f"dehaze it {k}" for k in range(5000)])
    before = snapshot(registry.root)
    with pytest.raises(ManifestError, match="examples"):
        registry.install(folder, trust=True)
    with pytest.raises(ManifestError, match="examples"):
        registry.validate(folder)
    assert snapshot(registry.root) == before


# ------------------------------------------------------------------------------------------------ M1
CHANGED_CODE = "def negative(image):\n    return 'not from the reviewed source'\n"


def unchecked_pyc(source_code: str, beside: Path, tmp_path: Path) -> Path:
    """A .pyc of `source_code` that Python would load for `beside` (the .py) without checking it."""
    other = tmp_path / "other-source" / beside.name
    other.parent.mkdir(exist_ok=True)
    other.write_text(source_code)
    target = Path(importlib.util.cache_from_source(str(beside)))
    target.parent.mkdir(exist_ok=True)
    py_compile.compile(str(other), cfile=str(target), doraise=True,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
    return target


def test_an_archive_install_drops_bytecode(registry: Registry, tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "negative")
    pyc = unchecked_pyc(CHANGED_CODE, folder / "negative.py", tmp_path)
    (folder / "stray.pyc").write_bytes(pyc.read_bytes())
    archive = tmp_path / "negative.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, f"negative/{file.relative_to(folder).as_posix()}")
    assert any("__pycache__" in n for n in zipfile.ZipFile(archive).namelist())
    record = registry.install(archive, trust=True).record
    installed = {p.relative_to(record.folder).as_posix() for p in record.folder.rglob("*")}
    assert installed == {"diffplugin.yaml", "negative.py"}
    image = load_plugin(registry, "acme/negative")(photo())
    assert hasattr(image, "size")


def photo():
    import PIL.Image

    return PIL.Image.fromarray(photo_array("astronaut", 32))


def test_plugin_code_never_runs_bytecode_found_beside_it(registry: Registry, tmp_path: Path) -> None:
    manifest = NEGATIVE_MANIFEST.replace('"negative:negative"', '"negpkg.effects:negative"')
    folder = tmp_path / "negpkg-plugin"
    folder.mkdir()
    (folder / "diffplugin.yaml").write_text(manifest)
    (folder / "negpkg").mkdir()
    (folder / "negpkg" / "__init__.py").write_text("")
    (folder / "negpkg" / "effects.py").write_text(NEGATIVE_CODE + "\nfrom . import helper  # noqa\n")
    (folder / "negpkg" / "helper.py").write_text("VALUE = 1\n")
    record = registry.install(folder, trust=True).record
    # Bytecode placed in the installed copy afterwards (an installed copy cannot ship any): never used.
    for module in ("__init__", "effects"):
        unchecked_pyc("raise RuntimeError('bytecode ran')\n", record.folder / "negpkg" / f"{module}.py", tmp_path)
    sourceless = record.folder / "negpkg" / "extra.pyc"
    py_compile.compile(str(record.folder / "negpkg" / "helper.py"), cfile=str(sourceless), doraise=True)
    function = load_plugin(registry, "acme/negative")
    assert hasattr(function(photo()), "size")
    effects = function.function.__module__
    assert not list((record.folder / "negpkg").glob("__pycache__/helper*"))  # nothing written either
    with pytest.raises(ModuleNotFoundError, match=r"\.py files only"):
        importlib.import_module(effects.rsplit(".", 1)[0] + ".extra")


# ------------------------------------------------------------------------------------------------ M2
@pytest.mark.parametrize("namespace", ["diffplugin", "diffp1ugin", "diffplugin_", "diff-plugin", "dlffplugin",
                                       "diffplugins", "diffplugin-official", "official", "0fficial", "builtin",
                                       "bui1tin", "built-in", "builtins"])
def test_namespaces_confusable_with_reserved_ones_are_refused(registry: Registry, tmp_path: Path,
                                                             namespace: str) -> None:
    folder = code_plugin(tmp_path / "lookalike", id=f"{namespace}/dehaze", tasks=["dehaze"])
    before = snapshot(registry.root)
    with pytest.raises(InstallRefused, match="reserved") as info:
        registry.install(folder, trust=True)
    assert info.value.field == "id" and snapshot(registry.root) == before


@pytest.mark.parametrize("namespace", ["acme", "plugin", "office", "builder", "diff", "photo-tools", "test"])
def test_ordinary_namespaces_are_not_mistaken_for_reserved_ones(namespace: str) -> None:
    assert reserved_lookalike(namespace) is None


def test_an_install_that_takes_over_a_task_says_so(registry: Registry, tmp_path: Path) -> None:
    folder = code_plugin(tmp_path / "haze", id="acme/haze-away", tasks=["dehaze"])
    result = registry.install(folder, trust=True)
    assert result.takes_over == {"dehaze": ["diffplugin/dehaze", "diffplugin/dehaze-classic"]}
    assert result.notes == ["dehaze: acme/haze-away may now be used instead of diffplugin/dehaze, "
                            "diffplugin/dehaze-classic; `diffplugin plugins disable acme/haze-away` to go back"]
    newer = code_plugin(tmp_path / "haze-2", id="acme/haze-away", tasks=["dehaze"], version="2.0.0")
    assert "acme/haze-away" not in registry.install(newer, trust=True).takes_over["dehaze"]
    assert registry.install(code_folder(tmp_path / "neg"), trust=True).takes_over == {}  # a new task: nothing


def test_plugins_install_prints_the_takeover_and_the_way_back(registry: Registry, tmp_path: Path) -> None:
    folder = code_plugin(tmp_path / "haze", id="acme/haze-away", tasks=["dehaze"])
    shown = CliRunner().invoke(app, ["plugins", "--registry", str(registry.root), "install", str(folder), "--trust"])
    assert shown.exit_code == 0, shown.output
    assert "dehaze: acme/haze-away may now be used instead of diffplugin/dehaze" in shown.output
    assert "plugins disable acme/haze-away" in shown.output
    again = code_plugin(tmp_path / "haze-2", id="acme/haze-away", tasks=["dehaze"], version="2.0.0")
    as_json = CliRunner().invoke(app, ["plugins", "--registry", str(registry.root), "install", str(again), "--trust",
                                       "--json"])
    assert json.loads(as_json.stdout)["takes_over"] == {"dehaze": ["diffplugin/dehaze", "diffplugin/dehaze-classic"]}


# ------------------------------------------------------------------------------------------------ M7
def test_a_search_during_a_reindex_sees_a_whole_index(registry: Registry, monkeypatch) -> None:
    expected = [h.id for h in registry.search("remove the snow", limit=3)]
    reader = Registry(registry.root, registry.models_dir).index()  # another user of the index, found current
    seen: list[list[str]] = []
    done = threading.Event()

    def search_elsewhere() -> None:
        seen.append([h.id for h in reader.search("remove the snow", limit=3)])
        done.set()

    embedder = type(index_module.embedding_function())
    real_call = embedder.__call__
    started = []

    def embed_mid_rebuild(self, input):
        if not started:  # the index is being rebuilt: a search now must find neither an empty nor a partial one
            started.append(1)
            threading.Thread(target=search_elsewhere, daemon=True).start()
            done.wait(3)  # the old code answered at once, from an emptied index; now the search waits for the swap
        return real_call(self, input)

    monkeypatch.setattr(embedder, "__call__", embed_mid_rebuild)
    registry.reindex()
    done.wait(60)
    assert seen == [expected]


def test_rebuilds_leave_no_old_index_behind(registry: Registry) -> None:
    registry.reindex()
    after_one = sorted(p.relative_to(registry.root).parts[:2] for p in (registry.root / "index").rglob("*"))
    registry.reindex()
    registry.reindex()
    after_three = sorted(p.relative_to(registry.root).parts[:2] for p in (registry.root / "index").rglob("*"))
    assert len({p for p in after_three if len(p) == 2}) == len({p for p in after_one if len(p) == 2}) == 2
    assert registry.search("remove the snow", limit=1)


# ------------------------------------------------------------------------------------------------ L2, L4
def test_a_refused_install_into_a_new_registry_removes_only_its_own_folders(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "new-registry"
    reg = Registry(root, models_dir=tmp_path / "models")
    other = root / "plugins" / "acme" / "other" / "1.0.0" / "diffplugin.yaml"
    real = Installer._install_locked

    def concurrent_install_landed_first(self, *args, **kwargs):
        other.parent.mkdir(parents=True)  # what another install did while this one waited for the lock
        other.write_text("another install's file")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Installer, "_install_locked", concurrent_install_landed_first)
    with pytest.raises(InstallRefused, match="--trust"):
        reg.install(code_folder(tmp_path / "neg"))
    assert other.read_text() == "another install's file"
    assert not (root / ".staging").exists()
    monkeypatch.undo()

    empty = Registry(tmp_path / "empty-registry", models_dir=tmp_path / "models")
    with pytest.raises(InstallRefused):
        empty.install(code_folder(tmp_path / "neg-2"))
    assert not empty.root.exists()


def test_staging_left_by_a_killed_install_is_removed_by_the_next_run(registry: Registry) -> None:
    leftover = registry.root / ".staging" / "install-k1ll3d" / "plugin" / "big.safetensors"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 4096)
    registry.disable("acme/sharpen")  # a change: it holds the lock, so nothing else is staging
    assert not (registry.root / ".staging").exists()

    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0" * 4096)
    other = os.open(registry.root, os.O_RDONLY)  # another process's install, staging while it holds the lock
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        assert [s.id for s in registry.plugins() if s.id == "acme/sharpen"]
        assert leftover.is_file()  # its live staging folder is left alone
    finally:
        fcntl.flock(other, fcntl.LOCK_UN)
        os.close(other)
    registry.plugins()  # any later run (list, select, edit) cleans up when no change is under way
    assert not (registry.root / ".staging").exists()


# ------------------------------------------------------------------------------------------------ L3
def test_a_very_long_version_fails_validate_not_install(registry: Registry, tmp_path: Path) -> None:
    folder = code_plugin(tmp_path / "long", version="1.0.0+" + "a" * 300)
    with pytest.raises(ManifestError, match="version"):
        registry.validate(folder)


# ------------------------------------------------------------------------------------------------ L6
class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("protocol", [0, 1])
def test_old_protocol_pickles_with_innocent_names_are_refused(registry: Registry, tmp_path: Path,
                                                              protocol: int) -> None:
    folder = code_folder(tmp_path / "pickled")
    (folder / "notes.dat").write_bytes(pickle.dumps(_Evil(), protocol=protocol))
    with pytest.raises(InstallRefused, match="pickled") as info:
        registry.install(folder, trust=True)
    assert "notes.dat" in str(info.value)
    big = code_folder(tmp_path / "pickled-big")  # a payload that runs past the part of the file that is read
    (big / "data.txt").write_bytes(pickle.dumps(["x" * (2 << 20), _Evil()], protocol=protocol))
    with pytest.raises(InstallRefused, match="pickled"):
        registry.install(big, trust=True)


def test_text_and_data_files_are_not_taken_for_pickles(registry: Registry, tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "innocent")
    (folder / "notes.txt").write_text("Notes.\nNothing to see.\n")
    (folder / "none.dat").write_bytes(pickle.dumps(None, protocol=0))  # a pickle that can run nothing
    (folder / "README.md").write_text("# Negative\n\nInverts colours.\n")
    (folder / "table.json").write_text(json.dumps({"a": [1, 2]}))
    (folder / "random.bin.dat").write_bytes(torch.randn(4096, generator=torch.Generator().manual_seed(0)).numpy()
                                            .tobytes())
    assert registry.install(folder, trust=True).record.id == "acme/negative"


# ------------------------------------------------------------------------------------------------ L11
def test_a_folder_in_place_of_state_json_is_one_line(registry: Registry, tmp_path: Path) -> None:
    registry.state_file.unlink()
    registry.state_file.mkdir()
    before = snapshot(registry.root)
    with pytest.raises(RegistryError, match=r"state\.json: damaged"):
        registry.install(code_folder(tmp_path / "neg"), trust=True)
    assert snapshot(registry.root) == before
    result = CliRunner().invoke(app, ["plugins", "--registry", str(registry.root), "install",
                                      str(tmp_path / "neg"), "--trust"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_a_full_disk_while_saving_state_is_one_line_and_rolled_back(registry: Registry, tmp_path, monkeypatch):
    before = snapshot(registry.root)
    real_fsync = os.fsync

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("registry.state.os.fsync", disk_full)
    with pytest.raises(RegistryError, match="No space left on device"):
        registry.install(code_folder(tmp_path / "neg"), trust=True)
    assert snapshot(registry.root) == before
    result = CliRunner().invoke(app, ["plugins", "--registry", str(registry.root), "install",
                                      str(tmp_path / "neg"), "--trust"])
    monkeypatch.setattr("registry.state.os.fsync", real_fsync)
    assert result.exit_code == 1 and "Traceback" not in result.output and "No space left" in result.stderr
    assert snapshot(registry.root) == before


# ------------------------------------------------------------------------------------------------ archives
def test_an_archive_may_expand_only_to_what_a_plugin_needs(registry: Registry, tmp_path: Path) -> None:
    limits = ArchiveLimits()
    assert limits.expanded_limit(1_500_000) == 64 * 1024**2  # was 4 GiB: a 1.5 MB archive filled 1 GiB
    assert limits.expanded_limit(200 * 1024**2) == 2 * 1024**3
    folder = code_folder(tmp_path / "bomb")
    (folder / "padding.safetensors.txt").write_bytes(b"\0" * (8 << 20))
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder).as_posix())
    assert archive.stat().st_size < 100_000
    before = snapshot(registry.root)
    with pytest.raises(InstallRefused, match="contents exceed"):
        registry.install(archive, trust=True, limits=ArchiveLimits(free_bytes=1 << 20))
    assert snapshot(registry.root) == before


def test_an_archive_whose_extraction_fails_to_write_says_so(registry: Registry, tmp_path: Path, monkeypatch):
    folder = code_folder(tmp_path / "neg")
    archive = tmp_path / "neg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            zf.write(file, file.relative_to(folder).as_posix())
    real_open = Path.open

    def open_full(self, mode="r", *args, **kwargs):
        if "w" in mode and "extracted" in str(self):
            raise OSError(28, "No space left on device", str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_full)
    with pytest.raises(RegistryError, match="No space left on device") as info:
        registry.install(archive, trust=True)
    assert "not a readable zip" not in str(info.value)
