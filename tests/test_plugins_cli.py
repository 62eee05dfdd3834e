"""`diffplugin plugins …` end to end: each verb with --json, refusals exit 1 and name the file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from tests.plugin_folders import EXAMPLE_PLUGIN, diffplugin_folder, python_folder

runner = CliRunner()


@pytest.fixture
def reg(tmp_path: Path) -> Path:
    return tmp_path / "registry"


def plugins(reg: Path, *args) -> object:
    return runner.invoke(app, ["plugins", "--registry", str(reg), *[str(a) for a in args]])


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_install_list_show_enable_disable_remove(reg: Path, tmp_path: Path) -> None:
    refused = plugins(reg, "install", EXAMPLE_PLUGIN, "--json")
    assert refused.exit_code == 1
    error = json.loads(refused.stdout)["error"]
    assert "diffplugin.yaml: field 'kind'" in error and "--trust" in error

    installed = ok(plugins(reg, "install", EXAMPLE_PLUGIN, "--trust", "--json"))
    assert installed["id"] == "acme/sharpen" and installed["warnings"] == []

    listed = ok(plugins(reg, "list", "--json"))
    mine = next(p for p in listed["plugins"] if p["id"] == "acme/sharpen")
    assert mine["runnable"] and mine["trust"]["how"] == "install --trust" and mine["source"] == "installed"
    assert next(p for p in listed["plugins"] if p["id"] == "diffplugin/derain")["problems"]

    shown = ok(plugins(reg, "show", "acme/sharpen", "--json"))
    assert shown["manifest"]["python"]["entry_point"] == "acme_sharpen:sharpen"
    human = plugins(reg, "show", "acme/sharpen")
    assert "trust: granted" in human.stdout and "install --trust" in human.stdout

    assert ok(plugins(reg, "disable", "acme/sharpen", "--json"))["enabled"] is False
    assert ok(plugins(reg, "enable", "acme/sharpen", "--json"))["runnable"] is True
    assert ok(plugins(reg, "remove", "acme/sharpen", "--json"))["removed"] == ["1.0.0"]
    missing = plugins(reg, "show", "acme/sharpen")
    assert missing.exit_code == 1 and "no plugin 'acme/sharpen'" in missing.stderr


def test_versions_through_the_cli(reg: Path, tmp_path: Path) -> None:
    plugins(reg, "install", python_folder(tmp_path / "a"), "--trust")
    plugins(reg, "install", python_folder(tmp_path / "b", version="2.0.0"), "--trust")
    assert ok(plugins(reg, "show", "acme/sharpen", "--json"))["versions"] == ["1.0.0", "2.0.0"]
    assert ok(plugins(reg, "enable", "acme/sharpen@1.0.0", "--json"))["version"] == "1.0.0"
    assert ok(plugins(reg, "remove", "acme/sharpen@2.0.0", "--json"))["removed"] == ["2.0.0"]


def test_search_and_reindex(reg: Path) -> None:
    results = ok(plugins(reg, "search", "my night photo is too dark", "--limit", "2", "--json"))["results"]
    assert results[0]["id"] == "diffplugin/lowlight" and len(results) == 2
    assert ok(plugins(reg, "reindex", "--json"))["indexed"] >= 8


def test_validate_init_and_schema(reg: Path, tmp_path: Path, tiny_pipe) -> None:
    assert ok(plugins(reg, "validate", EXAMPLE_PLUGIN, "--json"))["valid"] is True

    from plugins.diffplugin.plugin import TaskPlugin

    folder = tmp_path / "deflare"
    TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "deflare").save_pretrained(folder)
    written = ok(plugins(reg, "init", folder, "--id", "acme/deflare", "--name", "Flare removal",
                         "--description", "Removes lens flare from backlit photos.", "--example", "remove the flare",
                         "--example", "get rid of the lens flare", "--example", "the sun flare ruins it",
                         "--license", "Apache-2.0", "--author", "ACME", "--json"))
    assert Path(written["manifest"]).is_file()
    assert ok(plugins(reg, "validate", folder, "--json"))["id"] == "acme/deflare"
    again = plugins(reg, "init", folder, "--id", "acme/deflare", "--name", "x", "--description", "0123456789",
                    "--example", "a", "--example", "b", "--example", "c", "--license", "MIT", "--author", "A")
    assert again.exit_code == 1 and "--overwrite" in again.stderr

    (folder / "tpb" / "diffusion_pytorch_model.safetensors").write_bytes(b"tampered")
    bad = plugins(reg, "validate", folder)
    assert bad.exit_code == 1 and "tpb/diffusion_pytorch_model.safetensors" in bad.stderr

    schema = json.loads(plugins(reg, "schema").stdout)
    assert schema["title"] == "PluginManifest" and "examples" in schema["required"]


def test_install_refusal_names_the_users_file(reg: Path, tmp_path: Path, tiny_pipe) -> None:
    folder = diffplugin_folder(tmp_path / "p", tiny_pipe)
    manifest = folder / "diffplugin.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: one"))
    result = plugins(reg, "install", folder)
    assert result.exit_code == 1
    assert f"{manifest}: field 'version'" in result.stderr
    assert not (reg / "plugins").exists()


def test_the_example_plugin_installs_and_runs_from_the_command_line(tmp_path: Path, tiny_base_dir: Path,
                                                                    tiny_pipe) -> None:
    """What docs/plugins.md tells a user: install a published plugin, then use it by id (default registry)."""
    import numpy as np
    import PIL.Image

    from plugins.diffplugin.plugin import TaskPlugin
    from tests.conftest import photo_array

    ok(runner.invoke(app, ["plugins", "install", str(EXAMPLE_PLUGIN), "--trust", "--json"]))
    photo = tmp_path / "cat.png"
    PIL.Image.fromarray(photo_array("chelsea", 64)).save(photo)

    sharp = ok(runner.invoke(app, ["apply", str(photo), "-p", "acme/sharpen", "-o", str(tmp_path / "s.png"),
                                   "--json"]))
    assert sharp["plugins"] == ["acme/sharpen"] and sharp["processed_size"] is None  # no weights needed
    assert not np.array_equal(np.asarray(PIL.Image.open(tmp_path / "s.png")), np.asarray(PIL.Image.open(photo)))

    folder = tmp_path / "derain"
    TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "derain").save_pretrained(folder)
    mixed = ok(runner.invoke(app, ["apply", str(photo), "-p", str(folder), "-p", "acme/sharpen", "--base",
                                   str(tiny_base_dir), "--steps", "1", "--short-side", "32", "-o",
                                   str(tmp_path / "m.png"), "--json"]))
    assert mixed["plugins"] == ["derain", "acme/sharpen"] and mixed["size"] == [64, 43]

    unknown = runner.invoke(app, ["apply", str(photo), "-p", "acme/nothing", "-o", str(tmp_path / "x.png")])
    assert unknown.exit_code == 1 and "no plugin 'acme/nothing'" in unknown.stderr
