"""Hostile and unlucky plans (issue 16: H3, L8, M8, L9, M9): each is one clear line before any work, and the
bounds hold without the memory or stack the attack asked for."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import PIL.Image
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.planning import Plan, PlanError, Step

runner = CliRunner()


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    PIL.Image.new("RGB", (24, 16), (90, 120, 150)).save(path)
    return path


def one_line_error(result, *expected: str) -> str:
    """The command failed with exit 1 and one `error:` line (no traceback) holding `expected` (a progress bar's
    line may come before it)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for text in expected:
        assert text in lines[0]
    return lines[0]


def run_plan_file(plan: Path, photo: Path, tmp_path: Path):
    return runner.invoke(app, ["run", str(plan), str(photo), "-o", str(tmp_path / "out.png"), "--registry",
                               str(tmp_path / "reg"), "--no-judge"])


# ------------------------------------------------------------------------------------------- H3: alias bombs
ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
              + "".join(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]\n"
                        for prev, name in zip("abcdefgh", "bcdefghi", strict=True))
              + "steps:\n- {plugin: diffplugin/rotate, task: rotate, params: {angle: *i}}\n")


def test_a_yaml_alias_bomb_is_refused_when_the_plan_loads(tmp_path: Path, photo_file: Path) -> None:
    """Ten values, aliased nine levels deep: a billion values in 600 bytes, once anything walks them."""
    plan = tmp_path / "bomb.yaml"
    plan.write_text(ALIAS_BOMB)
    with pytest.raises(PlanError, match=r"bomb.yaml: line 2: YAML aliases \(\*name\) are not allowed"):
        Plan.load(plan)
    one_line_error(run_plan_file(plan, photo_file, tmp_path), "aliases")
    assert not (tmp_path / "out.png").exists()


def test_even_a_harmless_alias_is_refused_but_anchors_alone_load(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("x: &p 90\nsteps:\n- {plugin: diffplugin/rotate, task: rotate, params: {angle: *p}}\n")
    with pytest.raises(PlanError, match="line 3: YAML aliases"):
        Plan.load(plan)
    plan.write_text("steps:\n- &s {plugin: diffplugin/rotate, task: rotate, params: {angle: 90}}\n")
    assert Plan.load(plan).steps[0].params == {"angle": 90}


def test_an_option_error_quotes_a_huge_value_cut_short() -> None:
    from plugins.builtin.adjust import rotate

    value: object = ["x"] * 10
    for _ in range(6):  # a million strings, shared: cheap to hold, a 5 MB repr
        value = [value] * 10
    with pytest.raises(ValueError, match="option 'angle' must be a number") as error:
        rotate(PIL.Image.new("RGB", (4, 4)), angle=value)
    assert len(str(error.value)) < 250


def test_plans_larger_than_a_plan_could_be_are_refused_unread(tmp_path: Path) -> None:
    from assistant.planning import plan as plan_module

    big = tmp_path / "big.yaml"
    big.write_bytes(b"steps: []\n" + b"#" * plan_module.MAX_PLAN_BYTES)
    with pytest.raises(PlanError, match=r"big.yaml: larger than 1024 KiB"):
        Plan.load(big)
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"steps": [], "notes": ["n"] * (plan_module.MAX_PLAN_NODES + 1)}))
    with pytest.raises(PlanError, match="more than 100,000 values"):
        Plan.load(many)


# ---------------------------------------------------------------------------------- L8: nesting 100,000 deep
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_a_plan_nested_100000_deep_is_one_line(tmp_path: Path, photo_file: Path, suffix: str) -> None:
    plan = tmp_path / f"deep{suffix}"
    deep = "[" * 100_000 + "]" * 100_000
    plan.write_text(f'{{"steps": [{{"plugin": "diffplugin/rotate", "task": "rotate", "params": {{"a": {deep}}}}}]}}')
    with pytest.raises(PlanError, match=f"deep{suffix}: .*nested deeper than 16 levels"):
        Plan.load(plan)
    one_line_error(run_plan_file(plan, photo_file, tmp_path), "nested deeper than 16 levels")


def test_plans_as_the_project_writes_them_still_round_trip(tmp_path: Path) -> None:
    from assistant.planning.plan import Try

    tries = [Try(plugin="diffplugin/dehaze-classic", verdict="kept", reasons=["clearer"])]
    plan = Plan(request="r", steps=[Step(plugin="diffplugin/dehaze-classic", task="dehaze", params={"strength": 0.5},
                                         tries=tries)], dropped=[Step(plugin="a/b", task="t", tries=tries)],
                versions={"diffplugin": "1"}, notes=["n"])
    for suffix in (".yaml", ".json"):
        assert Plan.load(plan.save(tmp_path / f"p{suffix}")) == plan


# ------------------------------------------------------------------------------------- M8: unknown options
def test_an_unknown_option_names_the_step_the_option_and_the_known_ones(tmp_path: Path, photo_file: Path) -> None:
    plan = Plan(steps=[Step(plugin="diffplugin/exposure", task="exposure"),
                       Step(plugin="diffplugin/rotate", task="rotate", params={"foo": 1})]).save(tmp_path / "p.yaml")
    one_line_error(run_plan_file(plan, photo_file, tmp_path),
                   "step 2 (diffplugin/rotate): unknown option 'foo'; its options are angle, expand")
    assert not (tmp_path / "out.png").exists()


def test_batch_with_a_plan_with_an_unknown_option_reports_each_photo(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a", "b"):
        PIL.Image.new("RGB", (24, 16), (90, 120, 150)).save(photos / f"{name}.png")
    plan = Plan(steps=[Step(plugin="diffplugin/rotate", task="rotate", params={"foo": 1})]).save(tmp_path / "p.yaml")
    result = runner.invoke(app, ["batch", str(photos), "--plan", str(plan), "-o", str(tmp_path / "out"),
                                 "--registry", str(tmp_path / "reg"), "--no-judge", "--json"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    report = json.loads(result.stdout)
    assert [f["error"] for f in report["failed"]] == ["step 1 (diffplugin/rotate): unknown option 'foo'; its "
                                                      "options are angle, expand"] * 2


def test_known_options_of_diffusion_and_open_ended_plugins() -> None:
    from assistant.executor import ExecutorError, check_options, known_options
    from registry.runtime import PythonPlugin

    diffusion = object()  # anything that is not a code plugin runs through the diffusion pipeline
    assert known_options(diffusion) == ["seed", "steps"]
    with pytest.raises(ExecutorError, match="step 1: unknown option 'strength'; its options are seed, steps"):
        check_options(diffusion, {"strength": 1}, "step 1")

    def anything(image, **options):
        return image

    check_options(PythonPlugin(manifest=None, function=anything), {"whatever": 1}, "step 1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------- L9: folders in plan steps
def pickled_plugin_folder(folder: Path) -> Path:
    """A Task-Plugin folder whose weights are a pickle (which can run code when loaded)."""
    (folder / "tpb").mkdir(parents=True)
    (folder / "plugin.json").write_text('{"task": "derain"}')
    (folder / "tpb" / "config.json").write_text("{}")
    (folder / "tpb" / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"weight": [1.0]}, protocol=4))
    return folder


def test_a_plan_file_may_not_name_a_folder(tmp_path: Path, photo_file: Path) -> None:
    folder = pickled_plugin_folder(tmp_path / "evil")
    plan = Plan(steps=[Step(plugin=str(folder), task="derain")]).save(tmp_path / "p.yaml")
    with pytest.raises(PlanError, match=r"steps.0.plugin: '.*evil' is a path, not a registered plugin id"):
        Plan.load(plan)
    one_line_error(run_plan_file(plan, photo_file, tmp_path), "is a path", "diffplugin apply -p FOLDER")


def test_a_plan_step_that_is_also_a_relative_folder_runs_the_registered_plugin_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assistant.executor import Executor
    from registry.errors import PluginNotFound
    from registry.store import Registry

    monkeypatch.chdir(tmp_path)
    pickled_plugin_folder(tmp_path / "acme" / "evil")
    store = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    with pytest.raises(PluginNotFound):
        Executor().load("acme/evil", store, folders=False)


def test_apply_checks_a_plugin_folder_as_an_install_would(tmp_path: Path, photo_file: Path) -> None:
    folder = pickled_plugin_folder(tmp_path / "evil")
    result = runner.invoke(app, ["apply", str(photo_file), "-p", str(folder), "-o", str(tmp_path / "out.png"),
                                 "--registry", str(tmp_path / "reg")])
    one_line_error(result, "diffusion_pytorch_model.bin", "pickled files and torch checkpoints")
    (folder / "tpb" / "diffusion_pytorch_model.bin").unlink()
    result = runner.invoke(app, ["apply", str(photo_file), "-p", str(folder), "-o", str(tmp_path / "out.png"),
                                 "--registry", str(tmp_path / "reg")])
    one_line_error(result, "tpb/diffusion_pytorch_model.safetensors: missing")


# ---------------------------------------------------------------------------------------- M9: output size
@pytest.fixture
def small_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    from plugins.data import photos

    monkeypatch.setattr(photos, "MAX_PIXELS", 10_000)
    return 10_000


def test_resize_and_rotate_refuse_a_result_over_the_photo_limit_before_the_work(small_limit: int) -> None:
    from plugins.builtin.adjust import resize, rotate

    image = PIL.Image.new("RGB", (100, 50))
    with pytest.raises(ValueError, match=r"resize would make a 200x100 image \(0 Mpx\); the limit is 0 Mpx"):
        resize(image, scale=2.0)
    with pytest.raises(ValueError, match="resize would make a 150x150 image"):
        resize(image, width=150, height=150)
    assert resize(image, width=100, height=100).size == (100, 100)  # 10,000 px: the limit itself is fine
    assert rotate(image, angle=90).size == (50, 100)
    with pytest.raises(ValueError, match="rotate by 45 degrees would make a 107x107 image"):
        rotate(image, angle=45)
    assert rotate(image, angle=45, expand=False).size == (100, 50)


def test_run_refuses_a_resize_over_the_limit_in_one_line(tmp_path: Path, photo_file: Path, small_limit: int) -> None:
    plan = Plan(steps=[Step(plugin="diffplugin/resize", task="resize", params={"scale": 16.0})])
    one_line_error(run_plan_file(plan.save(tmp_path / "p.yaml"), photo_file, tmp_path),
                   "resize would make a 384x256 image")
    assert not (tmp_path / "out.png").exists()


def test_a_code_plugin_whose_result_is_over_the_limit_stops_the_run(tmp_path: Path, small_limit: int) -> None:
    from assistant.executor import DiffusionSettings, Executor, ExecutorError
    from registry.runtime import PythonPlugin
    from registry.store import Registry

    manifest = Registry(tmp_path / "reg", models_dir=tmp_path / "models").get("diffplugin/exposure").active.manifest
    huge = PythonPlugin(manifest, lambda image: PIL.Image.new("RGB", (200, 100)))
    with pytest.raises(ExecutorError, match="diffplugin/exposure made a 200x100 image"):
        Executor(DiffusionSettings(judge=False)).run(PIL.Image.new("RGB", (8, 8)), [huge])


def test_apply_names_a_missing_plugin_folder_and_how_to_get_one(tmp_path: Path, photo: PIL.Image.Image) -> None:
    source = tmp_path / "in.png"
    photo.save(source)
    (tmp_path / "empty").mkdir()
    cases = {str(tmp_path / "models" / "derain"): "no such plugin folder; `diffplugin models pull` writes",
             str(tmp_path / "empty"): "not a Task-Plugin folder (it has no plugin.json)"}
    for folder, message in cases.items():
        result = runner.invoke(app, ["apply", "-p", folder, str(source), "-o", str(tmp_path / "out.png")])
        assert result.exit_code == 1 and message in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_no_base_model_advice_names_commands_that_exist() -> None:
    from assistant.executor import Executor, ExecutorError

    with pytest.raises(ExecutorError) as info:
        Executor().base()
    assert "`diffplugin models pull`" in str(info.value) and "pass --base" not in str(info.value)
    assert "models pull --base DIR --skip-plugins" in str(info.value)


@pytest.mark.parametrize(("params", "size"), [({"width": 12}, (12, 8)), ({"height": 4}, (6, 4)), ({}, (12, 8)),
                                              ({"scale": 2}, (48, 32))])
def test_a_plan_may_resize_by_width_alone(params: dict, size: tuple[int, int], photo_file: Path,
                                          tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    Plan(steps=[Step(task="resize", plugin="diffplugin/resize", params=params)]).save(plan)
    result = run_plan_file(plan, photo_file, tmp_path)
    assert result.exit_code == 0, result.output
    with PIL.Image.open(tmp_path / "out.png") as out:
        assert out.size == size
