"""The `diffplugin` command line: every verb end to end on tiny models, with --json and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from tests.conftest import photo_array
from tests.official_format import randomize, write_official_task

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def as_json(result) -> dict | list:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_importing_the_cli_does_not_import_torch() -> None:
    code = ("import sys, assistant.cli, assistant.chat.app; "
            "print('torch' in sys.modules, 'diffusers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_help_lists_the_verbs() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in ("models", "train", "data", "apply", "edit", "batch", "chat"):
        assert verb in result.stdout
    models = invoke("models", "--help").stdout
    assert all(v in models for v in ("pull", "convert", "make-tiny"))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli") / "tiny"
    data = as_json(invoke("models", "make-tiny", folder, "--plugin", "derain", "--plugin", "lowlight", "--json"))
    assert data["plugins"] == [str(folder / "plugins" / t) for t in ("derain", "lowlight")]
    return folder


def test_apply_writes_a_restored_photo_and_protects_files(tiny_models: Path, tmp_path: Path) -> None:
    photo = tmp_path / "cat.png"
    PIL.Image.fromarray(photo_array("chelsea", 64)).save(photo)
    original = photo.read_bytes()
    out = tmp_path / "out" / "cat-restored.png"
    args = ["apply", photo, "--base", tiny_models, "-p", tiny_models / "plugins" / "derain",
            "-p", tiny_models / "plugins" / "lowlight", "--steps", "2", "--short-side", "32", "--device", "cpu"]

    data = as_json(invoke(*args, "-o", out, "--json"))
    assert data["plugins"] == ["derain", "lowlight"] and data["size"] == [64, 43]
    assert data["processed_size"] == [64, 42]  # 'min' never downscales; floored to the VAE factor
    assert PIL.Image.open(out).size == (64, 43)

    exact = as_json(invoke(*args, "--resize", "exact", "-o", tmp_path / "small.png", "--json"))
    assert exact["processed_size"] == [48, 32] and exact["size"] == [64, 43]
    again = invoke(*args, "-o", out)
    assert again.exit_code == 1 and "exists; pass --overwrite" in again.stderr
    same = invoke(*args, "-o", photo)
    assert same.exit_code == 1 and "overwrite the photo" in same.stderr
    assert photo.read_bytes() == original


def test_apply_reports_a_bad_photo_and_a_missing_base(tiny_models: Path, tmp_path: Path) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    result = invoke("apply", bad, "--base", tiny_models, "-p", tiny_models / "plugins" / "derain", "-o",
                    tmp_path / "o.png", "--json")
    assert result.exit_code == 1 and "not a readable image" in json.loads(result.stdout)["error"]
    photo = tmp_path / "p.png"
    PIL.Image.fromarray(photo_array("chelsea", 32)).save(photo)
    missing = invoke("apply", photo, "-p", tiny_models / "plugins" / "derain", "-o", tmp_path / "o.png")
    assert missing.exit_code == 1 and "diffplugin models pull" in missing.stderr


def test_convert_prints_what_it_wrote(tmp_path: Path, tiny_pipe) -> None:
    from plugins.diffplugin.plugin import TaskPlugin

    plugin = TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "desnow")
    randomize(plugin.scb, 0)
    source = write_official_task(tmp_path / "desnow", plugin, module_prefix=True)
    [item] = as_json(invoke("models", "convert", source, "-o", tmp_path / "out", "--json"))
    assert item["name"] == "desnow" and item["stripped_module_prefix"] is True
    again = invoke("models", "convert", source, "-o", tmp_path / "out")
    assert again.exit_code == 1 and "--overwrite" in again.stderr


def test_pull_without_network_exits_1_with_advice(tmp_path: Path) -> None:
    result = invoke("models", "pull", "--models-dir", tmp_path, "--skip-plugins", "--json")
    assert result.exit_code == 1
    assert "--base DIR --image-encoder DIR" in json.loads(result.stdout)["error"]


def test_synth_then_train_from_the_command_line(tiny_models: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for name in ("astronaut", "coffee"):
        PIL.Image.fromarray(photo_array(name, 48)).save(clean / f"{name}.png")
    data = as_json(invoke("data", "synth", clean, "-o", tmp_path / "haze", "--degradations", "haze,noise", "--json"))
    assert data["pairs"] == 2

    result = as_json(invoke("train", "plugin", "--data", data["csv"], "--task", "dehaze", "-o", tmp_path / "run",
                            "--base", tiny_models, "--resolution", "32", "--max-train-steps", "3",
                            "--checkpointing-steps", "2", "--validation-steps", "100", "--json"))
    assert result["global_step"] == 3
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    settings = json.loads((Path(result["plugin"]) / "plugin.json").read_text())
    assert settings["task"] == "dehaze" and settings["start"] == "noised-input"

    bad = invoke("train", "plugin", "--data", data["csv"], "--task", "dehaze", "-o", tmp_path / "r2",
                 "--base", tiny_models, "--mixed-precision", "fp8")
    assert bad.exit_code == 1 and "--mixed-precision" in bad.stderr


def test_synth_refuses_unknown_degradations(tmp_path: Path) -> None:
    (tmp_path / "clean").mkdir()
    PIL.Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "clean" / "a.png")
    result = invoke("data", "synth", tmp_path / "clean", "-o", tmp_path / "x", "--degradations", "fog")
    assert result.exit_code == 1 and "unknown degradation 'fog'" in result.stderr


def test_apply_refuses_an_unknown_output_type_before_any_work(tiny_models: Path, tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    PIL.Image.fromarray(photo_array("chelsea", 32)).save(photo)
    result = invoke("apply", photo, "--base", tiny_models, "-p", tiny_models / "plugins" / "derain",
                    "-o", tmp_path / "out.foo")
    assert result.exit_code == 1 and "unknown image type '.foo'" in result.stderr


def test_apply_turns_phone_photos_upright(tiny_models: Path, tmp_path: Path) -> None:
    """A JPEG stored landscape with EXIF orientation 6 (rotate 90°) is shown, and returned, as portrait."""
    photo = tmp_path / "phone.jpg"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    PIL.Image.fromarray(photo_array("chelsea", 64)).save(photo, exif=exif)
    out = tmp_path / "upright.png"
    data = as_json(invoke("apply", photo, "--base", tiny_models, "-p", tiny_models / "plugins" / "derain",
                          "--steps", "1", "--short-side", "32", "--seed", "7", "-o", out, "--json"))
    assert data["size"] == [43, 64]
    assert data["seed"] == 7  # the diffusion options reach the command as one DiffusionSettings
