"""`run`/`batch` through the executor from the command line: the judge, cancellation, and the Ray
backend (a local Ray instance on CPU, the same code a cluster runs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.planning import Plan, Step

runner = CliRunner()

CODE_PLUGIN = """schema_version: "1.0"
id: test/{name}
version: 1.0.0
name: {name}
description: A test plugin.
tasks: [{name}]
examples: [{name} it, please {name} the photo, {name} my picture]
kind: python
python: {{entry_point: "plugin:run"}}
license: MIT
authors: [{{name: Test Author}}]
"""

BODIES = {
    "soften": "from PIL import ImageFilter\n\n\ndef run(image):\n"
              "    return image.filter(ImageFilter.GaussianBlur(4))\n",
    "interrupt": "def run(image):\n    raise KeyboardInterrupt\n",
}


@pytest.fixture
def code_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "reg"
    for name, body in BODIES.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "diffplugin.yaml").write_text(CODE_PLUGIN.format(name=name))
        (folder / "plugin.py").write_text(body)
        result = runner.invoke(app, ["plugins", "--registry", str(registry), "install", str(folder), "--trust"])
        assert result.exit_code == 0, result.output
    return registry


def plan_file(path: Path, *plugins: str) -> Path:
    steps = [Step(plugin=p, task=p.split("/")[1].removesuffix("-classic")) for p in plugins]
    return Plan(request="test", steps=steps, order="user").save(path)


def photos(folder: Path, bad: bool = True) -> Path:
    """Three small hazy photos (and a broken file): dehazing them is an edit the judge keeps."""
    import skimage.data

    from plugins.data.degradations import degrade

    folder.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        clean = PIL.Image.fromarray(getattr(skimage.data, name)()).resize((96, 72))
        degrade(clean, ["haze"], seed=1).save(folder / f"{name}.jpg")
    if bad:
        (folder / "broken.jpg").write_bytes(b"not a photo")
    return folder


def test_run_judges_each_step_drops_a_harmful_one_and_records_the_tries(code_registry: Path, tmp_path: Path) -> None:
    import skimage.data

    source = tmp_path / "in.png"
    PIL.Image.fromarray(skimage.data.chelsea()).resize((320, 212)).save(source)
    plan = plan_file(tmp_path / "plan.yaml", "test/soften", "diffplugin/white-balance")
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["run", str(plan), str(source), "-o", str(out), "--registry", str(code_registry),
                                 "--json"])
    assert result.exit_code == 0, result.output
    reply = json.loads(result.stdout)["outputs"][0]
    assert any(note.startswith("soften skipped: every try made the photo worse") for note in reply["notes"])
    assert [j["kept"] for j in reply["judged"]] == [None, "diffplugin/white-balance"]
    saved = Plan.load(Path(reply["plan"]))
    assert [s.plugin for s in saved.steps] == ["diffplugin/white-balance"]
    assert [s.plugin for s in saved.dropped] == ["test/soften"]
    assert [t.verdict for t in saved.dropped[0].tries] == ["worse", "worse", "worse"]
    assert saved.steps[0].tries[0].verdict == "kept"
    # replaying the saved plan runs what was kept, and gives the same photo
    again = runner.invoke(app, ["run", str(reply["plan"]), str(source), "-o", str(tmp_path / "again.png"),
                                "--registry", str(code_registry), "--json"])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(PIL.Image.open(out)), np.asarray(PIL.Image.open(tmp_path / "again.png")))
    plain = runner.invoke(app, ["run", str(plan), str(source), "-o", str(tmp_path / "plain.png"), "--registry",
                                str(code_registry), "--no-judge", "--json"])
    assert plain.exit_code == 0, plain.output
    unjudged = Plan.load(tmp_path / "plain.png.plan.yaml")
    assert [s.plugin for s in unjudged.steps] == ["test/soften", "diffplugin/white-balance"]
    assert not unjudged.dropped and not unjudged.steps[0].tries


def test_a_cancelled_edit_writes_nothing(code_registry: Path, tmp_path: Path, photo) -> None:
    source = tmp_path / "in.png"
    photo.save(source)
    plan = plan_file(tmp_path / "plan.yaml", "diffplugin/lowlight-classic", "test/interrupt")
    out = tmp_path / "out.png"
    result = runner.invoke(app, ["run", str(plan), str(source), "-o", str(out), "--registry", str(code_registry)])
    assert result.exit_code == 130 and "cancelled" in result.output
    assert not out.exists() and not (tmp_path / "out.png.plan.yaml").exists()


def test_batch_options_are_checked(tmp_path: Path) -> None:
    folder = photos(tmp_path / "in", bad=False)
    for extra, message in ((["--executor", "spark"], "--executor"), (["--workers", "2"], "--executor ray"),
                           (["--short-side", "4"], "--short-side")):
        result = runner.invoke(app, ["batch", str(folder), "brighten it", "-o", str(tmp_path / "out"), *extra])
        assert result.exit_code != 0 and message in result.output, result.output


def read(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(PIL.Image.open(p)) for p in sorted(folder.glob("*.png"))}


def test_ray_batch_gives_the_local_results_and_reports_failures(tmp_path: Path) -> None:
    folder = photos(tmp_path / "in")
    reports = {}
    for kind, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "2"])):
        result = runner.invoke(app, ["batch", str(folder), "remove the haze", "-o", str(tmp_path / kind), "--json",
                                     *extra])
        assert result.exit_code == 1, result.output  # the broken photo
        reports[kind] = json.loads(result.stdout)
    for report in reports.values():
        assert sorted(Path(d["input"]).name for d in report["done"]) == ["astronaut.jpg", "chelsea.jpg", "coffee.jpg"]
        assert [Path(f["input"]).name for f in report["failed"]] == ["broken.jpg"]
    local, ray = read(tmp_path / "local"), read(tmp_path / "ray")
    assert list(local) == list(ray) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert all(np.array_equal(local[name], ray[name]) for name in local)
    assert all(not np.array_equal(local[name], np.asarray(PIL.Image.open(folder / name.replace("png", "jpg"))))
               for name in local)  # something was edited
    # The workers judged each step and recorded it, as this process does.
    judged, here = (Plan.load(tmp_path / kind / "coffee.png.plan.yaml") for kind in ("ray", "local"))
    assert judged.versions and judged.steps[0].tries
    assert [(t.plugin, t.mix, t.verdict) for t in judged.steps[0].tries] == \
        [(t.plugin, t.mix, t.verdict) for t in here.steps[0].tries]


def test_ray_workers_keep_a_diffusion_base_resident(tmp_path: Path, tiny_pipe) -> None:
    from assistant.paths import models_dir
    from registry.store import Registry
    from tests.plugin_folders import diffplugin_folder

    tiny_pipe.save_pretrained(models_dir() / "base")
    registry = tmp_path / "reg"
    Registry(registry, models_dir=models_dir()).install(diffplugin_folder(tmp_path / "derain-tiny", tiny_pipe))
    folder = photos(tmp_path / "in", bad=False)
    plan = plan_file(tmp_path / "plan.yaml", "acme/derain-tiny")
    for kind, extra in (("local", []), ("ray", ["--executor", "ray", "--workers", "1"])):
        result = runner.invoke(app, ["batch", str(folder), "--plan", str(plan), "-o", str(tmp_path / kind),
                                     "--registry", str(registry), "--short-side", "64", "--json", *extra])
        assert result.exit_code == 0, result.output
    local, ray = read(tmp_path / "local"), read(tmp_path / "ray")
    assert len(local) == len(ray) == 3
    # A Ray worker computes with one thread, this process with several: float sums may round a level apart.
    assert all(np.abs(local[name].astype(int) - ray[name].astype(int)).max() <= 1 for name in local)


def test_batch_never_replaces_a_file_it_did_not_write(tmp_path: Path) -> None:
    folder = photos(tmp_path / "in", bad=False)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "coffee.png"
    mine.write_bytes(b"the user's own file")
    result = runner.invoke(app, ["batch", str(folder), "make it brighter", "-o", str(out), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [Path(f["input"]).name for f in report["failed"]] == ["coffee.jpg"]
    assert "not written by diffplugin" in report["failed"][0]["error"]
    assert mine.read_bytes() == b"the user's own file" and len(report["done"]) == 2
