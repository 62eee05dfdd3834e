"""The per-step quality check (assistant.quality) on real photos from skimage.data and their gross failures:
blurred, tinted, blown out, washed out; and on mild real improvements that must not count as failures."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import skimage.data
import yaml
from PIL import ImageEnhance, ImageFilter

from assistant.quality import EXPECTED_CHANGES, JUDGED, Measures, Thresholds, Verdict, judge, measure
from plugins.tasks import OFFICIAL

# The Diff-Plugin restoration tasks.
RESTORATION_TASKS = OFFICIAL
UNKNOWN = "community-colourise"  # a task no entry names: judged on everything
CAST_JUDGED = tuple(task for task in RESTORATION_TASKS if "colour_cast" not in EXPECTED_CHANGES[task])


@cache
def photo(name: str) -> PIL.Image.Image:
    return PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


@cache
def photo_measures(name: str) -> Measures:
    return measure(photo(name))


def scaled(image: PIL.Image.Image, gains: tuple[float, float, float]) -> PIL.Image.Image:
    array = np.asarray(image, dtype=np.float64) * np.array(gains)
    return PIL.Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))


def blurred(name: str, radius: float = 3.0) -> Measures:
    return measure(photo(name).filter(ImageFilter.GaussianBlur(radius)))


def tinted(name: str) -> Measures:
    return measure(scaled(photo(name), (1.0, 0.8, 0.5)))


def blown_out(name: str) -> Measures:
    return measure(scaled(photo(name), (3.0, 3.0, 3.0)))


def washed_out(name: str) -> Measures:
    image = photo(name)
    return measure(PIL.Image.blend(image, PIL.Image.new("RGB", image.size, (128, 128, 128)), 0.7))


def hazy(image: PIL.Image.Image) -> PIL.Image.Image:
    return PIL.Image.blend(image, PIL.Image.new("RGB", image.size, (200, 200, 200)), 0.4)


def flat(value: int = 128, size: tuple[int, int] = (64, 48)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", size, (value, value, value))


def reasons_about(verdict: Verdict, word: str) -> list[str]:
    return [reason for reason in verdict.reasons if word in reason]


# --- what is measured ---------------------------------------------------------------------------------------------


def test_measures_follow_their_definitions_on_a_checkerboard() -> None:
    # Black and white alternate, so the 4-neighbour Laplacian is +-4 everywhere: variance exactly 16.
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)
    measures = measure(PIL.Image.fromarray(board))
    assert measures.sharpness == pytest.approx(16.0)
    assert measures.contrast == pytest.approx(0.5)
    assert measures.brightness == pytest.approx(0.5)
    assert measures.clipped == 1.0
    assert measures.colour_cast == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(("rgb", "cb", "cr"), [((0, 0, 255), 0.5, -0.081312), ((255, 0, 0), -0.168736, 0.5),
                                               ((0, 255, 0), -0.331264, -0.418688)])
def test_colour_cast_is_the_bt601_chroma_distance_from_grey(rgb: tuple[int, int, int], cb: float,
                                                            cr: float) -> None:
    measures = measure(PIL.Image.new("RGB", (8, 8), rgb))
    assert measures.colour_cast == pytest.approx(math.hypot(cb, cr))


def test_clipped_counts_both_ends_only() -> None:
    # Columns: black, white, and two just inside the 0.02 / 0.98 limits (6/255 and 249/255).
    image = PIL.Image.fromarray(np.tile(np.array([0, 255, 6, 249], dtype=np.uint8), (4, 1)))
    assert measure(image).clipped == pytest.approx(0.5)


def test_measuring_is_deterministic_and_leaves_the_image_alone() -> None:
    image = photo("astronaut").copy()
    pixels = image.tobytes()
    assert measure(image) == measure(image.copy()) == photo_measures("astronaut")
    assert image.tobytes() == pixels and image.mode == "RGB"


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_any_mode_is_measured_as_its_rgb_conversion(mode: str) -> None:
    image = photo("chelsea").convert(mode)
    assert measure(image) == measure(image.convert("RGB"))


def test_grey_photos_have_no_colour_cast() -> None:
    assert measure(photo("camera")).colour_cast < 1e-9


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (3, 3)])
def test_tiny_images_are_measured(size: tuple[int, int]) -> None:
    measures = measure(PIL.Image.new("RGB", size, (10, 200, 30)))
    assert measures.sharpness == 0.0
    assert all(math.isfinite(value) for value in vars(measures).values())


def test_empty_image_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        measure(PIL.Image.new("RGB", (0, 0)))


def test_measures_barely_depend_on_the_photo_size() -> None:
    small = photo("astronaut")
    large = small.resize((small.width * 2, small.height * 2), PIL.Image.Resampling.LANCZOS)
    a, b = measure(small), measure(large)
    # Both are measured at 512 px; the enlargement and reduction together lose some of the finest detail.
    assert 1 / 1.5 < b.sharpness / a.sharpness < 1.5
    assert b.contrast == pytest.approx(a.contrast, abs=0.01)
    assert b.brightness == pytest.approx(a.brightness, abs=0.01)
    assert b.colour_cast == pytest.approx(a.colour_cast, abs=0.01)
    assert b.clipped == pytest.approx(a.clipped, abs=0.01)


def test_measures_json_is_rounded_to_four_decimals() -> None:
    data = photo_measures("coffee").to_json()
    assert list(data) == [f.name for f in fields(Measures)]
    for name, value in data.items():
        assert value == round(getattr(photo_measures("coffee"), name), 4)


# --- the exemptions -----------------------------------------------------------------------------------------------


def test_exemptions_name_only_judged_measures() -> None:
    assert {f.name for f in fields(Measures)} >= JUDGED
    for task, names in EXPECTED_CHANGES.items():
        assert names <= JUDGED, task
        assert task == task.strip().lower(), task


def test_every_bundled_plugin_task_has_an_entry() -> None:
    # A new built-in task should be thought through here rather than fall back to "judged on everything".
    root = Path(__file__).resolve().parents[1] / "plugins"
    tasks = {task for path in root.glob("*/manifests/*.yaml") for task in yaml.safe_load(path.read_text())["tasks"]}
    assert set(RESTORATION_TASKS) <= tasks
    assert tasks <= set(EXPECTED_CHANGES)


def test_only_colour_restoring_tasks_are_exempt_from_colour_cast() -> None:
    assert set(RESTORATION_TASKS) - set(CAST_JUDGED) == {"dehaze", "lowlight"}


def classic_restorations() -> list[tuple[str, str, Callable[[PIL.Image.Image], PIL.Image.Image], str]]:
    from plugins.builtin import adjust, deblur, dehaze, demoire, denoise, derain, highlight, lowlight, synthetic
    from plugins.data.degradations import DEGRADATIONS, to_array, to_image

    def degraded(name: str) -> Callable[[PIL.Image.Image], PIL.Image.Image]:
        return lambda image: to_image(DEGRADATIONS[name](to_array(image), np.random.default_rng(0)))

    return [
        ("haze", degraded("haze"), dehaze.dehaze, "dehaze"),
        ("rain", degraded("rain"), derain.derain, "derain"),
        ("snow", degraded("snow"), derain.desnow, "desnow"),
        ("blur", degraded("blur"), deblur.deblur, "deblur"),
        ("lowlight", degraded("lowlight"), lowlight.lowlight, "lowlight"),
        ("noise", degraded("noise"), denoise.denoise, "denoise"),
        ("moire", synthetic.moire, demoire.demoire, "demoire"),
        ("specular", synthetic.specular, highlight.highlight, "highlight"),
        ("white-balance", lambda image: scaled(image, (1.0, 0.9, 0.75)), adjust.white_balance, "white-balance"),
    ]


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_the_bundled_classic_plugins_undoing_their_degradation_are_not_worse(name: str) -> None:
    # The exemptions exist for these: removing rain, snow and noise costs 40-95% of the Laplacian variance, and
    # dehazing or brightening gives back colour the degradation took away.
    for _, degrade, restore, task in classic_restorations():
        damaged = degrade(photo(name))
        verdict = judge(measure(damaged), measure(restore(damaged)), task)
        assert not verdict.worse, (task, verdict.reasons)


# --- judging ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", [*EXPECTED_CHANGES, UNKNOWN])
def test_an_unchanged_photo_is_not_worse(task: str) -> None:
    measures = measure(photo("coffee"))
    verdict = judge(measures, measure(photo("coffee").copy()), task)
    assert not verdict.worse and verdict.reasons == []
    # Thresholds are crossed, not reached: with zero tolerance an unchanged photo still passes.
    assert not judge(measures, measures, task, Thresholds(0.0, 0.0, 0.0, 0.0)).worse


@pytest.mark.parametrize("task", ["deblur", UNKNOWN])
def test_a_blurred_photo_is_worse(task: str) -> None:
    before, after = photo_measures("astronaut"), blurred("astronaut")
    verdict = judge(before, after, task)
    assert verdict.worse
    [reason] = reasons_about(verdict, "sharpness")
    assert reason == f"sharpness fell {1 - after.sharpness / before.sharpness:.0%} " \
                     f"({before.sharpness:.4f} -> {after.sharpness:.4f})"
    assert before.sharpness > 10 * after.sharpness


@pytest.mark.parametrize("task", ["derain", "desnow", "demoire"])
def test_a_blur_is_not_held_against_artefact_removal(task: str) -> None:
    verdict = judge(photo_measures("astronaut"), blurred("astronaut"), task)
    assert not verdict.worse, verdict.reasons


@pytest.mark.parametrize("task", [*CAST_JUDGED, "white-balance", UNKNOWN])
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_a_tinted_photo_is_worse(task: str, name: str) -> None:
    before, after = photo_measures(name), tinted(name)
    assert after.colour_cast > before.colour_cast + Thresholds().cast_rise
    verdict = judge(before, after, task)
    assert verdict.worse
    assert reasons_about(verdict, "colour cast")


@pytest.mark.parametrize("task", ["dehaze", "lowlight", "saturation"])
def test_a_tint_is_not_held_against_colour_restoring_tasks(task: str) -> None:
    assert not reasons_about(judge(photo_measures("astronaut"), tinted("astronaut"), task), "colour cast")


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_a_blown_out_photo_is_worse_for_dehaze(name: str) -> None:
    before, after = photo_measures(name), blown_out(name)
    assert after.clipped > before.clipped + 0.2
    verdict = judge(before, after, "dehaze")
    assert verdict.worse
    assert reasons_about(verdict, "clipped")


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_lowlight_is_not_judged_on_clipping(name: str) -> None:
    verdict = judge(photo_measures(name), blown_out(name), "lowlight")
    assert not reasons_about(verdict, "clipped")
    assert not verdict.worse, verdict.reasons


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_a_washed_out_photo_is_worse_on_contrast_for_dehaze(name: str) -> None:
    before, after = photo_measures(name), washed_out(name)
    verdict = judge(before, after, "dehaze")
    assert verdict.worse
    [reason] = reasons_about(verdict, "contrast")
    assert reason.startswith("contrast fell 70% (")


@pytest.mark.parametrize("task", ["highlight", "contrast", "exposure", "crop"])
def test_a_washed_out_photo_is_not_held_against_tonal_tasks(task: str) -> None:
    verdict = judge(photo_measures("astronaut"), washed_out("astronaut"), task)
    assert not reasons_about(verdict, "contrast")


@pytest.mark.parametrize("task", ["deblur", "face", UNKNOWN])
@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_a_mild_sharpen_is_not_worse(task: str, name: str) -> None:
    before = photo_measures(name)
    after = measure(ImageEnhance.Sharpness(photo(name)).enhance(2.0))
    assert after.sharpness > before.sharpness
    verdict = judge(before, after, task)
    assert not verdict.worse, verdict.reasons


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee"])
def test_a_contrast_stretch_of_a_hazy_photo_is_not_worse(name: str) -> None:
    haze = hazy(photo(name))
    before, after = measure(haze), measure(ImageEnhance.Contrast(haze).enhance(1.4))
    assert after.contrast > before.contrast and after.sharpness > before.sharpness
    verdict = judge(before, after, "dehaze")
    assert not verdict.worse, verdict.reasons


def test_a_flat_image_has_no_sharpness_to_lose() -> None:
    grey = measure(flat())
    assert grey.sharpness == 0.0
    assert grey.contrast == pytest.approx(0.0, abs=1e-12)
    for task in [*EXPECTED_CHANGES, UNKNOWN]:
        assert not judge(grey, grey, task).worse
        assert not judge(grey, measure(flat(140)), task).worse
    # Going the other way, a photo flattened to grey has lost everything.
    verdict = judge(photo_measures("chelsea"), grey, UNKNOWN)
    assert reasons_about(verdict, "sharpness fell 100%") and reasons_about(verdict, "contrast fell 100%")


def test_task_names_are_matched_whatever_their_case() -> None:
    assert not judge(photo_measures("astronaut"), blurred("astronaut"), " DeRain ").worse


def test_custom_thresholds_are_honoured() -> None:
    before, soft = photo_measures("astronaut"), blurred("astronaut", radius=1.0)
    assert judge(before, soft, UNKNOWN).worse
    assert not judge(before, soft, UNKNOWN, Thresholds(sharpness_drop=0.95)).worse
    # Nothing can fall by more than 100%.
    assert not judge(before, blurred("astronaut"), UNKNOWN, Thresholds(sharpness_drop=1.0)).worse
    # A zero threshold: any rise of the cast counts.
    grey, warm = measure(flat()), measure(PIL.Image.new("RGB", (64, 48), (132, 128, 124)))
    assert 0 < warm.colour_cast < Thresholds().cast_rise
    assert not judge(grey, warm, UNKNOWN).worse
    assert reasons_about(judge(grey, warm, UNKNOWN, Thresholds(cast_rise=0.0)), "colour cast")


def test_default_thresholds() -> None:
    assert Thresholds() == Thresholds(sharpness_drop=0.4, contrast_drop=0.4, cast_rise=0.04, clipped_rise=0.10)


@pytest.mark.parametrize("bad", [{"sharpness_drop": -0.1}, {"contrast_drop": 1.5}, {"cast_rise": -0.01},
                                 {"clipped_rise": float("nan")}, {"sharpness_drop": float("nan")}])
def test_nonsense_thresholds_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        Thresholds(**bad)


def test_verdict_json_carries_the_measures_and_reasons() -> None:
    before, after = photo_measures("chelsea"), tinted("chelsea")
    data = json.loads(json.dumps(judge(before, after, "deblur").to_json()))
    assert data["worse"] is True
    assert data["before"] == before.to_json() and data["after"] == after.to_json()
    assert any("colour cast" in reason for reason in data["reasons"])
