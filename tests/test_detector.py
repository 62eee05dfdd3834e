"""The degradation detector (assistant.detector) on real skimage photos and the project's synthetic degradations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image
from skimage import data

from assistant import detector
from assistant.detector import FEATURES, TASKS, Finding, confidence, detect, load_calibration, measure
from plugins.data.degradations import degrade

# Held-out photos of the calibration (benchmarks/detector_accuracy.py fits on astronaut, coffee, camera, grass).
SIZE = 256


def _photo(name: str) -> Image.Image:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    image.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    return image


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: _photo(name) for name in ("chelsea", "rocket")}


def test_clean_photos_give_few_findings(photos: dict[str, Image.Image]) -> None:
    findings = [finding for image in photos.values() for finding in detect(image)]
    # A clean photo may legitimately look a little hazy or dark; a flood of findings would mislead the planner.
    assert len(findings) <= 1, findings


@pytest.mark.parametrize(
    ("degradation", "task"),
    [("haze", "dehaze"), ("lowlight", "lowlight"), ("blur", "deblur"), ("rain", "derain")],
)
def test_strong_degradation_is_the_top_finding(photos: dict[str, Image.Image], degradation: str, task: str) -> None:
    for seed, image in enumerate(photos.values()):
        degraded = degrade(image, [degradation], seed=seed, strength=1.5)
        findings = detect(degraded)
        assert findings, f"{degradation}: nothing found"
        assert findings[0].task == task, findings


def test_findings_are_sorted_calibrated_and_explained(photos: dict[str, Image.Image]) -> None:
    degraded = degrade(photos["chelsea"], ["haze", "rain"], seed=3)
    findings = detect(degraded, threshold=0.0)
    assert [f.task for f in findings] and {f.task for f in findings} == set(TASKS)
    confidences = [f.confidence for f in findings]
    assert confidences == sorted(confidences, reverse=True)
    assert all(0.0 <= c <= 1.0 for c in confidences)
    assert all(isinstance(f, Finding) and f.evidence for f in findings)
    # The evidence quotes the measured primary statistic, so a user can check it.
    haze = next(f for f in findings if f.task == "dehaze")
    assert haze.evidence.startswith("dark channel mean") and "haze above" in haze.evidence


def test_threshold_filters_and_is_checked(photos: dict[str, Image.Image]) -> None:
    image = degrade(photos["rocket"], ["haze"], seed=1)
    assert all(f.confidence >= 0.9 for f in detect(image, threshold=0.9))
    with pytest.raises(ValueError, match="threshold"):
        detect(image, threshold=1.5)


def test_measure_returns_finite_numbers(photos: dict[str, Image.Image]) -> None:
    stats = measure(photos["chelsea"])
    needed = {spec.name for specs in FEATURES.values() for spec in specs}
    assert needed <= stats.keys()
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (8, 8), (120, 30, 200)),
        Image.new("RGB", (1, 1)),
        Image.fromarray(data.camera()),  # greyscale "L"
        Image.fromarray(data.logo()),  # RGBA
        Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20),  # 16-bit "I;16"
        Image.fromarray(np.random.default_rng(0).random((40, 30), dtype=np.float32)),  # float "F"
        _photo("astronaut").convert("P"),
        _photo("astronaut").convert("CMYK"),
    ],
    ids=["tiny", "1x1", "grey", "rgba", "16bit", "float", "palette", "cmyk"],
)
def test_any_mode_and_size_works(image: Image.Image) -> None:
    stats = measure(image)
    assert all(math.isfinite(v) for v in stats.values())
    for finding in detect(image, threshold=0.0):
        assert 0.0 <= finding.confidence <= 1.0


def test_sixteen_bit_is_rescaled_not_clipped() -> None:
    # A mid-grey 16-bit image must read as mid-grey, not as white (what a plain convert("RGB") gives).
    image = Image.fromarray(np.full((32, 32), 30000, dtype=np.uint16))
    assert measure(image)["luma_mean"] == pytest.approx(30000 / 65535, abs=0.01)


def test_calibration_file_matches_the_detector() -> None:
    raw = json.loads(detector.CALIBRATION_PATH.read_text())
    assert load_calibration() == raw
    for task in TASKS:
        model = raw["tasks"][task]
        assert model["features"] == [spec.name for spec in FEATURES[task]]
        assert all(scale > 0 for scale in model["scale"])
    # detect() uses exactly these parameters: recompute one confidence by hand.
    stats = measure(_photo("chelsea"))
    model = raw["tasks"]["dehaze"]
    z = model["bias"] + sum(
        w * (spec.transform(stats[spec.name]) - m) / s
        for spec, w, m, s in zip(FEATURES["dehaze"], model["weights"], model["mean"], model["scale"], strict=True)
    )
    assert confidence("dehaze", stats) == pytest.approx(1 / (1 + math.exp(-z)))


def test_bad_calibration_file_teaches_the_fix(tmp_path) -> None:
    broken = tmp_path / "calibration.json"
    broken.write_text(json.dumps({"tasks": {"dehaze": {"features": ["something_else"]}}}))
    with pytest.raises(ValueError, match=r"detector_accuracy\.py --write"):
        load_calibration(broken)
