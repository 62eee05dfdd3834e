"""The judge: clear synthetic cases it must get right, photos it cannot measure, and the judged edit on the real
degraded photos in tests/data/real-photos (from other projects): a step is kept only when the judge does not
find it worse, a dropped step leaves the photo exactly as it was, and right edits are not all thrown away."""

from __future__ import annotations

import csv
import json
from dataclasses import astuple
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest

from assistant.executor import Executor
from assistant.judge import (
    CALIBRATION_PATH,
    FEATURE_NAMES,
    PAIR_FEATURE_NAMES,
    assess,
    calibration,
    look,
    pair_features,
)
from assistant.quality import measure_array
from plugins.builtin.dehaze import dehaze
from plugins.builtin.denoise import denoise
from plugins.builtin.derain import derain
from plugins.data.degradations import degrade
from registry.runtime import load_plugin
from registry.store import Registry
from tests.conftest import photo_array

REAL = Path(__file__).parent / "data" / "real-photos"
KEPT_AT_LEAST = 11
TASK_OF_LABEL = {"haze": "dehaze", "rain": "derain", "raindrops": "derain", "lowlight": "lowlight",
                 "noise": "denoise", "blur": "deblur", "snow": "desnow"}
# The built-in each task runs (the judge's alternatives come from the registry; here there is one per task).
BUILTIN = {"dehaze": "diffplugin/dehaze-classic", "derain": "diffplugin/derain-classic",
           "lowlight": "diffplugin/lowlight-classic", "denoise": "diffplugin/denoise",
           "deblur": "diffplugin/deblur-classic", "desnow": "diffplugin/desnow-classic"}


def test_the_shipped_calibration_covers_every_restoration_task_with_these_features() -> None:
    stored = json.loads(CALIBRATION_PATH.read_text())
    width = 2 * len(FEATURE_NAMES) + len(PAIR_FEATURE_NAMES)  # the change, the input's own values, the pair's
    assert len(stored["features"]) == width and stored["features"][-len(PAIR_FEATURE_NAMES):] == list(
        PAIR_FEATURE_NAMES)
    assert set(calibration()) == {"dehaze", "lowlight", "deblur", "derain", "desnow", "denoise", "demoire",
                                  "highlight"}
    for model in calibration().values():
        assert model.mean.shape == model.scale.shape == (width,) and model.layers[0][0].shape[0] == width
        assert model.layers[-1][0].shape[1] == 1 and 0.0 < model.chance_better(model.mean) < 1.0


@pytest.fixture(scope="module")
def clean() -> PIL.Image.Image:
    return PIL.Image.fromarray(photo_array("rocket", 320))  # not a calibration photo


def test_restoring_the_degradation_is_better_and_doing_it_to_a_clean_photo_is_worse(clean) -> None:
    hazy = degrade(clean, ["haze"], seed=4)
    assert not assess(look(hazy), look(dehaze(hazy)), "dehaze").worse
    assert assess(look(clean), look(dehaze(clean)), "dehaze").worse
    noisy = degrade(clean, ["noise"], seed=4)
    assert not assess(look(noisy), look(denoise(noisy)), "denoise").worse


def test_gross_damage_is_worse_whatever_the_model_says(clean) -> None:
    blurred = clean.filter(PIL.ImageFilter.GaussianBlur(4))
    verdict = assess(look(clean), look(blurred), "dehaze")
    assert verdict.worse and verdict.better is not None and "sharpness fell" in verdict.reasons[0]
    crushed = assess(look(clean), look(clean.point(lambda v: min(255, v * 4))), "dehaze")
    assert crushed.worse and any("clipped" in reason for reason in crushed.reasons)


@pytest.mark.parametrize("size", [(1, 1), (7, 40)])
def test_a_photo_it_cannot_measure_is_never_judged_worse(size: tuple[int, int]) -> None:
    tiny = PIL.Image.new("RGB", size, (10, 20, 30))
    verdict = assess(look(tiny), look(tiny.point(lambda v: 255 - v)), "dehaze")
    assert not verdict.worse and verdict.better is None and "could not measure" in verdict.reasons[0]


@pytest.mark.parametrize("colour", [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
def test_flat_photos_and_steps_that_change_nothing_get_a_verdict_or_a_note_never_a_crash(colour) -> None:
    flat = PIL.Image.new("RGB", (64, 48), colour)
    for after in (flat, PIL.Image.new("RGB", (64, 48), (90, 30, 200)), PIL.Image.new("RGB", (32, 24), colour)):
        verdict = assess(look(flat), look(after), "dehaze")
        assert verdict.better is None or 0.0 <= verdict.better <= 1.0
        assert verdict.better is not None or verdict.reasons


def real_cases() -> list[tuple[str, str]]:
    """Each real photo with the task its label asks for, and derain on every photo (the request a user made of
    a heavy-rain street photo, where the old derain painted blobs)."""
    rows = list(csv.DictReader((REAL / "labels.csv").open()))
    cases = [(r["file"], TASK_OF_LABEL[r["degradations"]]) for r in rows if r["degradations"] in TASK_OF_LABEL]
    return cases + [(r["file"], "derain") for r in rows if TASK_OF_LABEL.get(r["degradations"]) != "derain"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(tmp_path_factory.mktemp("registry"))


@pytest.mark.parametrize(("file", "task"), real_cases())
def test_on_real_photos_a_step_is_kept_only_when_not_judged_worse(file: str, task: str, registry) -> None:
    photo = PIL.Image.open(REAL / file).convert("RGB")
    result = Executor().run(photo, [load_plugin(registry, BUILTIN[task])])
    outcome = result.outcomes[0]
    if outcome.plugin is None:
        assert np.array_equal(np.asarray(result.image), np.asarray(photo))  # dropped: the photo as it was
        assert result.notes and result.notes[-1].startswith(f"{task} skipped")
    else:
        kept = [t for t in outcome.tries if t.verdict == "kept"]
        assert len(kept) == 1 and kept[0].better is not None and kept[0].better >= 0.5 and not kept[0].reasons
        assert not assess(look(photo), look(result.image), task).worse


def test_right_edits_on_real_photos_are_mostly_kept(registry) -> None:
    """The judge must not make the assistant useless: of the 16 photos whose label names a task, the built-in's
    edit (possibly milder) was kept on 12 when this was written (derain-classic was dropped on three real rain
    photos, where it smears detail, and refused the heavy-rain one); fewer than KEPT_AT_LEAST fails."""
    kept = []
    for file, task in real_cases():
        if task == "derain" and TASK_OF_LABEL.get(_label(file)) != "derain":
            continue
        photo = PIL.Image.open(REAL / file).convert("RGB")
        kept.append(Executor().run(photo, [load_plugin(registry, BUILTIN[task])]).outcomes[0].plugin is not None)
    assert len(kept) == 16 and sum(kept) >= KEPT_AT_LEAST, kept


def test_derain_on_a_rainless_photo_is_dropped_and_heavy_rain_is_left_alone(registry) -> None:
    for file in ("daclip_179.png", "instructir_car.png"):  # a night shot, and the heavy-rain street photo
        photo = PIL.Image.open(REAL / file).convert("RGB")
        result = Executor().run(photo, [load_plugin(registry, "diffplugin/derain-classic")])
        assert result.order == [] and np.array_equal(np.asarray(result.image), np.asarray(photo))


def _label(file: str) -> str:
    rows = {r["file"]: r["degradations"] for r in csv.DictReader((REAL / "labels.csv").open())}
    return rows[file]


def test_derain_itself_still_removes_synthetic_rain() -> None:
    """On chelsea (PSNR 18 -> 26 dB in docs/builtin-plugins.md's setting) the judge keeps derain's work; on the
    rocket the same plugin takes 44% of the contrast with the streaks, and the damage check objects."""
    rainy = degrade(PIL.Image.fromarray(photo_array("chelsea", 320)), ["rain"], seed=4)
    assert not assess(look(rainy), look(derain(rainy)), "derain").worse


# ------------------------------------------------------------------------------------------ what a step did
def _pair(before: PIL.Image.Image, after: PIL.Image.Image) -> dict[str, float]:
    first, second = look(before).features, look(after).features
    assert first is not None and second is not None
    return dict(zip(PAIR_FEATURE_NAMES, pair_features(first, second), strict=True))


def test_pair_features_see_fills_halos_and_stripes(clean) -> None:
    same = _pair(clean, clean)
    assert same["mean_abs_change"] == 0 and same["ssim"] > 0.999 and same["overshoot"] == 0
    pixels = np.asarray(clean).copy()
    pixels[80:200, 80:220] = pixels[80:200, 80:220].reshape(-1, 3).mean(axis=0)  # a painted-over patch
    filled = _pair(clean, PIL.Image.fromarray(pixels))
    assert filled["texture_lost"] > same["texture_lost"] + 0.05 and filled["ssim_low"] > 0.05
    sharpened = _pair(clean, clean.filter(PIL.ImageFilter.UnsharpMask(radius=3, percent=300, threshold=0)))
    assert sharpened["overshoot"] > 0.05 and sharpened["detail_correlation"] > 0.5  # halos, and more of the same
    smoothed = _pair(clean, clean.filter(PIL.ImageFilter.GaussianBlur(2)))
    assert smoothed["detail_correlation"] < -0.5 and smoothed["detail_gain"] < 0
    stripes = np.asarray(clean, dtype=np.float32) + 25 * np.sin(np.arange(clean.width) * 1.3)[None, :, None]
    striped = _pair(clean, PIL.Image.fromarray(np.clip(stripes, 0, 255).astype(np.uint8)))
    assert striped["texture_added"] > same["texture_added"] + 0.02



# ------------------------------------------------------------------------------ the fast path, against the plain one
def _plain_features(small: np.ndarray) -> list[float]:
    """`FEATURE_NAMES` written out with numpy reductions, as the docstrings define them (the judge computes them
    with fewer passes and OpenCV's reductions)."""
    luma = small @ np.array([0.299, 0.587, 0.114], np.float32)
    half = cv2.resize(luma, (luma.shape[1] // 2, luma.shape[0] // 2), interpolation=cv2.INTER_AREA)

    def blur(array: np.ndarray, sigma: float) -> np.ndarray:
        return cv2.GaussianBlur(array, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)

    def mscn(plane: np.ndarray) -> list[float]:
        mu = blur(plane, 7 / 6)
        coefficients = (plane - mu) / (np.sqrt(np.abs(blur(plane * plane, 7 / 6) - mu * mu)) + 1 / 255)
        var = coefficients.astype(np.float64).var()
        kurt = ((coefficients - coefficients.mean()).astype(np.float64) ** 4).mean() / var**2
        return [var, np.log(kurt), (coefficients[:, :-1] * coefficients[:, 1:]).mean(),
                (coefficients[:-1] * coefficients[1:]).mean()]

    def steepest(plane: np.ndarray) -> float:
        return max(np.percentile(np.abs(np.diff(plane, axis=axis)), 99.5) for axis in (0, 1))

    def blockiness(plane: np.ndarray) -> float:
        ratios = []
        for d in (np.abs(np.diff(plane, axis=1)).mean(axis=0), np.abs(np.diff(plane, axis=0)).mean(axis=1)):
            ratios.append(d[7::8].mean() / (np.delete(d, np.s_[7::8]).mean() + 1e-4))
        return float(np.mean(ratios))

    red, green, blue = (small[..., i] for i in range(3))
    lowest, highest = small.min(axis=2), small.max(axis=2)
    dark = cv2.erode(lowest, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REFLECT)
    residual = cv2.filter2D(luma, -1, np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32))[1:-1, 1:-1]
    laplacian = cv2.Laplacian(luma, cv2.CV_32F)[1:-1, 1:-1]
    mean = cv2.blur(luma, (5, 5))
    local_std = np.sqrt(np.maximum(cv2.blur(luma * luma, (5, 5)) - mean * mean, 0))
    cb, cr = (small.reshape(-1, 3) @ np.array([[-0.168736, 0.5], [-0.331264, -0.418688], [0.5, -0.081312]],
                                                np.float32)).mean(axis=0)
    rg, yb = red - green, 0.5 * (red + green) - blue
    return [*mscn(luma), *mscn(half), dark.mean(), luma.mean(), *np.percentile(luma[::2, ::2], (5, 95)),
            np.sqrt(np.pi / 2) * np.abs(residual).mean() / 6, np.log(laplacian.var() + 1e-6),
            cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, np.ones((5, 5), np.uint8)).mean(), blockiness(luma),
            (local_std < 1.5 / 255).mean(), ((luma < 0.02) | (luma > 0.98)).mean(), np.hypot(cb, cr), luma.std(),
            np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()),
            steepest(luma) / (steepest(half) + 1e-4), ((luma > 0.9) & (highest - lowest < 0.12)).mean()]


def _plain_pair_features(before: np.ndarray, after: np.ndarray) -> list[float]:
    """`PAIR_FEATURE_NAMES` as `pair_features` defines them, one filter per quantity."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    b, a = before @ weights, after @ weights

    def blur(array: np.ndarray, sigma: float) -> np.ndarray:
        return cv2.GaussianBlur(array, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)

    def local_std(plane: np.ndarray) -> np.ndarray:
        mean = cv2.blur(plane, (5, 5))
        return np.sqrt(np.maximum(cv2.blur(plane * plane, (5, 5)) - mean * mean, 0))

    mean_b, mean_a = blur(b, 1.5), blur(a, 1.5)
    var_b, var_a = blur(b * b, 1.5) - mean_b**2, blur(a * a, 1.5) - mean_a**2
    cov = blur(a * b, 1.5) - mean_a * mean_b
    ssim = ((2 * mean_a * mean_b + 1e-4) * (2 * cov + 9e-4)) / ((mean_a**2 + mean_b**2 + 1e-4) * (var_a + var_b + 9e-4))
    std_b, std_a = local_std(b), local_std(a)
    detail_b = b - blur(b, 1.0)
    change = (a - b) - blur(a - b, 1.0)
    norm = np.sqrt((detail_b.astype(np.float64) ** 2).sum() * (change.astype(np.float64) ** 2).sum())
    correlation = (detail_b.astype(np.float64) * change).sum() / norm if norm > 1e-12 else 0.0
    gain = np.log((((detail_b + change).astype(np.float64) ** 2).mean() + 1e-8)
                  / ((detail_b.astype(np.float64) ** 2).mean() + 1e-8))
    square = np.ones((5, 5), np.uint8)
    overshoot = ((a > cv2.dilate(b, square) + 3 / 255) | (a < cv2.erode(b, square) - 3 / 255)).mean()
    chroma = np.array([[-0.168736, 0.5], [-0.331264, -0.418688], [0.5, -0.081312]], np.float32)
    return [np.abs(after - before).mean(), ssim.mean(), (ssim < 0.5).mean(),
            ((std_b > 0.02) & (std_a < 0.4 * std_b)).mean(), ((std_a > 0.02) & (std_b < 0.4 * std_a)).mean(),
            correlation, gain, overshoot, np.abs((after - before).reshape(-1, 3) @ chroma).mean()]


def test_the_fast_features_are_their_plain_definitions() -> None:
    """Real photos and what a blur, a brightening and a denoise do to them: every feature, every pair feature and
    every damage measure as written out plainly above, to float rounding."""
    for file in ("daclip_00006.jpg", "instructir_frog.png", "daclip_IMG_6444.jpg"):
        photo = PIL.Image.open(REAL / file).convert("RGB")
        before = look(photo)
        for after in (look(photo.filter(PIL.ImageFilter.GaussianBlur(2))), look(photo.point(lambda v: v * 7 // 5)),
                      look(denoise(photo))):
            assert before.features is not None and after.features is not None
            for seen in (before.features, after.features):
                np.testing.assert_allclose(seen.values, _plain_features(seen.small), rtol=1e-4, atol=1e-6)
                plain = measure_array(seen.small.astype(np.float64))  # its own luminance, in double precision
                assert astuple(seen.measures) == pytest.approx(astuple(plain), rel=1e-4, abs=1e-4)
            np.testing.assert_allclose(pair_features(before.features, after.features),
                                       _plain_pair_features(before.features.small, after.features.small),
                                       rtol=1e-4, atol=1e-6)
