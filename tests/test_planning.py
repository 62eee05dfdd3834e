"""Plans as data, the order the user states, the order policy, the planner's choices, and `plan`/`run`/`edit`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.photo_output import plan_of
from assistant.planning import Plan, PlanError, Step
from assistant.planning.policy import OrderPolicy, user_order
from assistant.selector.clauses import joined_clauses

runner = CliRunner()


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_plan_files_round_trip(tmp_path: Path, suffix: str) -> None:
    plan = Plan(request="remove the rain", steps=[Step(plugin="acme/x", task="derain", params={"seed": 3},
                                                       reason="asked")], order="single")
    path = plan.save(tmp_path / f"p{suffix}")
    assert Plan.load(path) == plan
    assert not list(tmp_path.glob(".*partial"))
    fresh = tmp_path / "fresh"
    fresh.write_bytes(b"")
    assert path.stat().st_mode & 0o777 == fresh.stat().st_mode & 0o777  # not mkstemp's private 0600


def test_bad_plan_files_name_the_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - task: derain\n")
    with pytest.raises(PlanError, match=r"bad.yaml: steps.0.plugin"):
        Plan.load(bad)
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(PlanError, match="not valid YAML"):
        Plan.load(bad)
    with pytest.raises(PlanError, match="cannot read"):
        Plan.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(("text", "order", "stated"), [
    ("remove the rain, then brighten it", [0, 1], True),
    ("brighten it, but first get rid of the fog", [1, 0], True),
    ("I'd like it brighter, though clearing the smog should come first", [1, 0], True),
    ("brighten it. before that, remove the rain", [1, 0], True),
    ("rain, fog, and darkness - please fix all three in that order", [0, 1, 2], True),
    ("foggy and dark", [0, 1], False),
])
def test_the_order_the_user_states(text: str, order: list[int], stated: bool) -> None:
    found = user_order(joined_clauses(text))
    assert (found.clauses, found.stated) == (order, stated)


def test_policy_orders_by_its_rules_and_keeps_the_named_order_otherwise() -> None:
    from assistant.planning.policy import Rule

    policy = OrderPolicy(version="test", rules=[
        Rule(first="derain", then="dehaze", reason="streaks first"),
        Rule(first="dehaze", then="lowlight", reason="haze removal darkens"),
        Rule(first="lowlight", then="face", reason="faces last")])
    order, reasons = policy.order(["face", "lowlight", "dehaze", "derain"])
    assert order == ["derain", "dehaze", "lowlight", "face"]
    assert "haze removal darkens" in reasons["lowlight"] and reasons["derain"] == ""
    assert policy.order(["exposure", "dehaze"])[0] == ["dehaze", "exposure"]
    assert policy.order(["colorize", "sharpen"])[0] == ["colorize", "sharpen"]  # no rule: as named


def test_the_shipped_policy_follows_the_shipped_order_evidence() -> None:
    """Each pair measured with a clear result is a measured rule pointing the winning way; the rest keep theirs."""
    evidence = json.loads((Path(__file__).parent.parent / "docs" / "results" / "order-evidence.json").read_text())
    policy = OrderPolicy.load()
    assert policy.version.endswith("-measured")
    for pair in evidence["pairs"]:
        rules = [r for r in policy.rules if {r.first, r.then} == {pair["a"], pair["b"]}]
        if pair["verdict"] == "no clear winner":
            assert all(not r.provenance.startswith("diffplugin eval orders") for r in rules), pair
        else:
            first, _, then = pair["verdict"].partition(" before ")
            assert [(r.first, r.then) for r in rules] == [(first, then)], pair
            assert rules[0].provenance.startswith("diffplugin eval orders")
    assert any(r.then == "face" for r in policy.rules)  # unmeasured pairs keep the literature's rules


@pytest.fixture(scope="module")
def planner():
    from assistant.planning import load_planner

    return load_planner()


def test_stated_order_wins_over_the_policy(planner) -> None:
    plan = planner.plan("brighten it and then remove the rain")
    assert [s.task for s in plan.steps] == ["lowlight", "derain"] and plan.order == "user"
    plan = planner.plan("brighten it and remove the rain")
    assert [s.task for s in plan.steps] == ["derain", "lowlight"] and plan.order == "policy"
    assert "after derain" in plan.steps[1].reason
    assert plan.policy_version == OrderPolicy.load().version


def test_out_of_scope_plans_nothing_and_says_so(planner) -> None:
    plan = planner.plan("write me a poem about the sea")
    assert plan.steps == [] and any("no plugin does that" in n for n in plan.notes)


def test_missing_weights_are_said(planner) -> None:
    plan = planner.plan("remove the rain")
    assert any("cannot run" in n or "no diffusion weights" in n for n in plan.notes), plan.notes


# --------------------------------------------------------------------------- commands
@pytest.fixture
def negative_registry(tmp_path: Path) -> Path:
    """A registry with a trusted code plugin for a task the selector was never trained on."""
    from tests.plugin_folders import code_folder

    folder = code_folder(tmp_path / "negative")
    registry = tmp_path / "reg"
    ok(runner.invoke(app, ["plugins", "--registry", str(registry), "install", str(folder), "--trust", "--json"]))
    return registry


def test_edit_writes_the_photo_and_the_plan_and_never_touches_the_input(negative_registry: Path, tmp_path: Path,
                                                                         photo) -> None:
    source = tmp_path / "in.png"
    photo.save(source)
    before = source.read_bytes()
    out = tmp_path / "out" / "negative.png"
    result = ok(runner.invoke(app, ["edit", str(source), "please invert the colours", "-o", str(out), "--json",
                                    "--registry", str(negative_registry)]))
    assert source.read_bytes() == before
    assert [s["plugin"] for s in result["plan"]["steps"]] == ["acme/negative"]
    recorded = plan_of(out)
    assert recorded is not None and recorded.versions["acme/negative"] == "1.0.0" and "diffplugin" in recorded.versions
    assert Plan.load(out.with_name("negative.png.plan.yaml")).steps[0].plugin == "acme/negative"

    again = runner.invoke(app, ["edit", str(source), "invert the colours", "-o", str(out),
                                "--registry", str(negative_registry)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    onto_input = runner.invoke(app, ["edit", str(source), "invert the colours", "-o", str(source),
                                     "--registry", str(negative_registry)])
    assert onto_input.exit_code == 1 and source.read_bytes() == before


def test_run_replays_a_plan_on_several_photos(negative_registry: Path, tmp_path: Path, photo) -> None:
    plan_file = tmp_path / "plan.json"
    ok(runner.invoke(app, ["plan", "invert the colours", "-o", str(plan_file), "--json",
                           "--registry", str(negative_registry)]))
    inputs = []
    for name in ("a", "b"):
        inputs.append(tmp_path / f"{name}.jpg")
        photo.save(inputs[-1])
    out = ok(runner.invoke(app, ["run", str(plan_file), *map(str, inputs), "-o", str(tmp_path / "done"), "--json",
                                 "--registry", str(negative_registry)]))
    assert [Path(o["output"]).name for o in out["outputs"]] == ["a.png", "b.png"]
    assert all(Path(o["output"]).is_file() for o in out["outputs"])


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"])
def test_bad_photos_get_one_clear_line(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    result = runner.invoke(app, ["edit", str(bad), "brighten it", "-o", str(tmp_path / "o.png")])
    assert result.exit_code == 1
    assert "bad.png" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.png").exists()


def test_fix_this_photo_plans_from_the_detector(planner) -> None:
    from plugins.data.photos import load_photo

    photo = load_photo(Path(__file__).resolve().parent.parent / "examples" / "photos" / "rocket-foggy-dusk.jpg")
    plan = planner.plan("fix this photo", photo)
    assert plan.source == "detector"
    # The detector sees the darkness; the haze under it is missed (a known weakness, see docs/detector.md).
    assert "lowlight" in {s.task for s in plan.steps}, plan.to_json()
    assert all(s.reason.startswith("detected:") for s in plan.steps)
    assert planner.plan("fix this photo").steps == []  # no photo, no task named: nothing to guess from


def test_installed_diffusion_weights_are_preferred_over_the_built_in(tmp_path: Path, tiny_pipe) -> None:
    from assistant.paths import models_dir, open_registry
    from assistant.planning import load_planner
    from registry.store import Registry
    from tests.plugin_folders import diffplugin_folder

    registry = tmp_path / "reg"
    without = load_planner(open_registry(registry)).plan("remove the rain streaks")
    assert [s.plugin for s in without.steps] == ["diffplugin/derain-classic"]
    assert any("no diffusion weights" in note for note in without.notes)
    Registry(registry, models_dir=models_dir()).install(diffplugin_folder(tmp_path / "derain-tiny", tiny_pipe))
    with_weights = load_planner(open_registry(registry)).plan("remove the rain streaks")
    assert [s.plugin for s in with_weights.steps] == ["acme/derain-tiny"] and not with_weights.notes


def test_batch_resumes_and_reports_a_bad_photo_without_stopping(negative_registry: Path, tmp_path: Path,
                                                                photo) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.jpg", "b.png"):
        photo.save(folder / name)
    (folder / "c.jpg").write_bytes(b"not a photo")
    (folder / "notes.txt").write_text("not picked up")
    out = tmp_path / "out"
    args = ["batch", str(folder), "invert the colours", "-o", str(out), "--json", "--registry", str(negative_registry)]
    first = runner.invoke(app, args)
    assert first.exit_code == 1  # one photo failed
    report = json.loads(first.stdout)
    assert [Path(d["output"]).name for d in report["done"]] == ["a.png", "b.png"]
    assert [Path(f["input"]).name for f in report["failed"]] == ["c.jpg"] and "c.jpg" in report["failed"][0]["error"]
    assert (out / "a.png.plan.yaml").is_file()
    (folder / "c.jpg").unlink()
    second = ok(runner.invoke(app, args))
    assert len(second["skipped"]) == 2 and second["done"] == [] and second["failed"] == []
    assert runner.invoke(app, ["batch", str(folder), "-o", str(out)]).exit_code == 1  # neither request nor plan


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path: Path, photo) -> None:
    import os

    from assistant.photo_output import OutputError, check_output

    source = tmp_path / "in.png"
    photo.save(source)
    other_name = tmp_path / "same.png"
    os.link(source, other_name)  # one file, two names (as Photo.JPG and photo.jpg are on macOS)
    with pytest.raises(OutputError, match="that is the input photo"):
        check_output(other_name, [source], overwrite=True)
