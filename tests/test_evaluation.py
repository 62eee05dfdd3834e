"""`eval plugin` and `eval orders` on the built-in plugins and real photos, and the policy they write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.evaluation.metrics import PSNR_IDENTICAL, psnr_ssim
from assistant.evaluation.orders import OrderEvidence, OrderRun, policy_from
from assistant.planning.policy import OrderPolicy, Rule

runner = CliRunner()


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_psnr_and_ssim_on_real_photos(photo) -> None:
    assert psnr_ssim(photo, photo) == (PSNR_IDENTICAL, 1.0)
    slight, strong = (photo.filter(PIL.ImageFilter.GaussianBlur(r)) for r in (0.7, 3))
    (p1, s1), (p2, s2) = psnr_ssim(slight, photo), psnr_ssim(strong, photo)
    assert 20 < p2 < p1 < PSNR_IDENTICAL and 0 < s2 < s1 < 1
    with pytest.raises(ValueError, match="sizes differ"):
        psnr_ssim(photo.resize((40, 20)), photo)


@pytest.fixture(scope="module")
def haze_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import skimage.data

    root = tmp_path_factory.mktemp("haze")
    clean = root / "clean-photos"
    clean.mkdir()
    for name in ("astronaut", "coffee", "chelsea"):
        PIL.Image.fromarray(getattr(skimage.data, name)()).resize((128, 96)).save(clean / f"{name}.png")
    ok(runner.invoke(app, ["data", "synth", str(clean), "-o", str(root / "set"), "--degradations", "haze", "--json"]))
    return root / "set" / "pairs.csv"


def test_eval_plugin_scores_output_and_input_and_resumes(haze_data: Path, tmp_path: Path) -> None:
    out, sheet = tmp_path / "eval", tmp_path / "sheet.png"
    args = ["eval", "plugin", "diffplugin/dehaze-classic", "--data", str(haze_data), "-o", str(out), "--sheet",
            str(sheet), "--json"]
    report = ok(runner.invoke(app, args))
    assert len(report["images"]) == 3 and report["resumed"] == 0
    assert set(report["images"][0]) == {"image", "psnr", "ssim", "psnr_input", "ssim_input"}
    mean = report["mean"]
    assert mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in report["images"]]), abs=1e-3)
    assert mean["psnr"] > mean["psnr_input"] + 1  # the built-in dehaze does remove synthetic haze
    assert len(list((out / "outputs").rglob("*.png"))) == 3
    assert json.loads((out / "results.json").read_text())["mean"] == mean
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0] == "image,psnr,ssim,psnr_input,ssim_input" and rows[-1].startswith("mean,") and len(rows) == 5
    with PIL.Image.open(sheet) as opened:
        assert opened.height > 3 * 192 and opened.width > 3 * 192  # three rows of three tiles
    refused = runner.invoke(app, args)  # the finished run's sheet is the user's file now
    assert refused.exit_code == 1 and "sheet.png exists; pass --overwrite" in refused.stdout
    again = ok(runner.invoke(app, [*args, "--overwrite"]))
    assert again["resumed"] == 3 and again["mean"] == mean


def test_eval_plugin_says_what_is_missing_for_clip_fid(haze_data: Path, tmp_path: Path) -> None:
    from assistant.evaluation.distribution import missing

    report = ok(runner.invoke(app, ["eval", "plugin", "diffplugin/dehaze-classic", "--data", str(haze_data), "-o",
                                    str(tmp_path / "e"), "--limit", "1", "--reference", str(haze_data.parent / "clean"),
                                    "--json"]))
    if missing():  # this machine: clean-fid and OpenAI CLIP are not installed
        assert "clean-fid" in report["distribution"]["error"] or "CLIP" in report["distribution"]["error"]
    else:
        assert report["distribution"]["clip_fid"] >= 0


def test_eval_plugin_refuses_bad_input(tmp_path: Path, haze_data: Path) -> None:
    for args, message in ((["--data", str(tmp_path / "none.csv")], "none.csv"),
                          (["--data", str(haze_data), "--layout", "zip"], "--layout")):
        result = runner.invoke(app, ["eval", "plugin", "diffplugin/dehaze-classic", *args])
        assert result.exit_code == 1 and message in result.output, result.output


def test_eval_orders_measures_both_orders_and_writes_a_policy(tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.yaml"
    result = ok(runner.invoke(app, ["eval", "orders", "--degradations", "rain,haze", "--size", "64", "--json",
                                    "--write-policy", "--policy-file", str(policy_file), "-o",
                                    str(tmp_path / "evidence.json")]))
    assert len(result["photos"]) == 5 and len(result["runs"]) == 10  # 5 photos x 2 orders
    assert {tuple(r["order"]) for r in result["runs"]} == {("derain", "dehaze"), ("dehaze", "derain")}
    (pair,) = result["pairs"]
    assert (pair["a"], pair["b"], pair["photos"]) == ("dehaze", "derain", 5)
    assert pair["a_then_b_wins"] + pair["b_then_a_wins"] <= 5
    assert json.loads((tmp_path / "evidence.json").read_text())["pairs"] == result["pairs"]
    policy = OrderPolicy.load(policy_file)
    assert policy.version == result["policy"]["version"]
    rain_haze = [r for r in policy.rules if {r.first, r.then} == {"derain", "dehaze"}]
    assert len(rain_haze) == 1
    if pair["verdict"] == "no clear winner":
        assert "no clear winner" in rain_haze[0].provenance
    else:
        assert rain_haze[0].provenance.startswith("diffplugin eval orders")
    shipped = OrderPolicy.load()
    untouched = [r for r in shipped.rules if {r.first, r.then} != {"derain", "dehaze"}]
    assert all(r in policy.rules for r in untouched)  # pairs it did not measure keep their literature rule


def test_a_written_policy_is_what_the_planner_uses(tmp_path: Path) -> None:
    ok(runner.invoke(app, ["eval", "orders", "--degradations", "rain,lowlight", "--size", "48", "--write-policy",
                           "--json"]))
    from assistant.planning.policy import user_policy_file

    plan = ok(runner.invoke(app, ["plan", "remove the rain and brighten it", "--json"]))
    assert OrderPolicy.load().version == OrderPolicy.load(user_policy_file()).version
    if plan["order"] == "policy":
        assert plan["policy_version"] == OrderPolicy.load(user_policy_file()).version


def evidence(gains: list[float]) -> OrderEvidence:
    """rain+haze evidence where derain-then-dehaze beats the other order by `gains[i]` dB on photo i."""
    photos = [f"p{i}" for i in range(len(gains))]
    found = OrderEvidence(["rain", "haze"], {"derain": "x/derain@1", "dehaze": "x/dehaze@1"}, photos, 0)
    for photo, gain in zip(photos, gains, strict=True):
        found.runs += [OrderRun(photo, ("rain", "haze"), ("derain", "dehaze"), 30 + gain, 0.9),
                       OrderRun(photo, ("rain", "haze"), ("dehaze", "derain"), 30.0, 0.9)]
    return found


def test_policy_from_evidence_replaces_only_clear_results() -> None:
    current = OrderPolicy(version="v1", rules=[
        Rule(first="dehaze", then="derain", reason="literature says so", provenance="paper X"),
        Rule(first="derain", then="face", reason="faces last", provenance="paper Y")])
    clear = policy_from(evidence([0.5, 0.4, 0.6, 0.3]), current)
    (measured,) = [r for r in clear.rules if {r.first, r.then} == {"derain", "dehaze"}]
    assert (measured.first, measured.then) == ("derain", "dehaze") and "4 of 4 photos" in measured.reason
    assert "x/derain@1" in measured.provenance and clear.version.endswith("-measured")
    assert current.rules[1] in clear.rules
    unclear = policy_from(evidence([0.5, -0.4, 0.6, -0.3]), current)
    (kept,) = [r for r in unclear.rules if {r.first, r.then} == {"derain", "dehaze"}]
    assert (kept.first, kept.then) == ("dehaze", "derain") and "no clear winner" in kept.provenance
    too_few = policy_from(evidence([0.5, 0.5]), current)
    assert [r.first for r in too_few.rules if r.then == "derain"] == ["dehaze"]


def test_eval_orders_refuses_what_it_cannot_measure() -> None:
    for degradations, message in (("rain", "at least two"), ("jpeg,rain", "jpeg"), ("rain,fog", "fog")):
        result = runner.invoke(app, ["eval", "orders", "--degradations", degradations, "--size", "48"])
        assert result.exit_code == 1 and message in result.output, result.output


def test_eval_plugin_on_a_composite_set_takes_one_combination(tmp_path: Path, photo) -> None:
    from plugins.data.degradations import degrade

    root = tmp_path / "CDD-11_test"
    for folder, names in (("clear", []), ("haze", ["haze"]), ("low_haze", ["lowlight", "haze"])):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            image = photo if not names else degrade(photo, names, seed=i)
            image.save(root / folder / f"{i:03d}.png")
    args = ["eval", "plugin", "diffplugin/dehaze-classic", "--data", str(root), "-o", str(tmp_path / "e"), "--json"]
    report = ok(runner.invoke(app, [*args, "--subset", "haze"]))
    assert [r["image"] for r in report["images"]] == ["haze/000", "haze/001"]
    wrong = runner.invoke(app, [*args, "--subset", "rain"])
    assert wrong.exit_code == 1 and "haze, low_haze" in wrong.output
