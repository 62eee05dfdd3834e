"""Which degradations does this photo show? Measurable image statistics mapped to calibrated task confidences.

The planner calls `detect` when a user asks to "fix this photo" without naming a task. Each task has a few
hand-designed statistics (dark channel for haze, edge steepness for blur, ...) and a logistic model fitted on
synthetic degradations of real photos by `benchmarks/detector_accuracy.py`; the fitted parameters live in
`detector_calibration.json` beside this module. Only numpy, scipy and Pillow run here: no model weights, well
under a second per photo on two CPU cores. See docs/detector.md for each statistic and its failure modes.

    >>> from assistant.detector import detect
    >>> [f.task for f in detect(photo)]          # doctest: +SKIP
    ['dehaze']
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

__all__ = ["FEATURES", "TASKS", "FeatureSpec", "Finding", "confidence", "detect", "load_calibration", "measure"]

TASKS = ("dehaze", "lowlight", "deblur", "derain", "desnow", "demoire", "highlight", "denoise")

#: Statistics are computed on a copy whose long side is at most this; scale-relative degradations (haze, blur
#: of a few percent of the frame, rain streaks) survive it and it keeps detect() fast on large photos.
WORKING_SIZE = 512

CALIBRATION_PATH = Path(__file__).with_name("detector_calibration.json")


@dataclass(frozen=True)
class Finding:
    """One proposed task: `confidence` in [0, 1] and the measured statistic that supports it."""

    task: str
    confidence: float
    evidence: str


@dataclass(frozen=True)
class FeatureSpec:
    """One input of a task's logistic model.

    `offset` None feeds the statistic as is; a number feeds log(value + offset), for statistics that span
    orders of magnitude (noise sigma, blob counts). `label` and `unit_format` word the evidence string.
    """

    name: str
    offset: float | None
    label: str
    unit_format: str = "{:.2f}"

    def transform(self, value: float) -> float:
        return value if self.offset is None else math.log(max(value, 0.0) + self.offset)

    def inverse(self, value: float) -> float:
        return value if self.offset is None else math.exp(value) - self.offset


#: Model inputs per task; the first is the primary statistic quoted in the evidence. The calibration file
#: records the names it was fitted with and `load_calibration` refuses a file that disagrees.
FEATURES: dict[str, tuple[FeatureSpec, ...]] = {
    "dehaze": (
        FeatureSpec("dark_channel_mean", None, "dark channel mean"),
        FeatureSpec("luma_std", None, "luminance std"),
        FeatureSpec("saturation_mean", None, "mean saturation"),
    ),
    "lowlight": (
        FeatureSpec("luma_mean", None, "mean luminance"),
        FeatureSpec("shadow_fraction", None, "shadow fraction"),
        FeatureSpec("luma_p95", None, "95th-percentile luminance"),
    ),
    "deblur": (
        FeatureSpec("edge_slope_min", 1e-3, "edge steepness (weakest direction)", "{:.3f}"),
        FeatureSpec("edge_slope_max", 1e-3, "edge steepness (strongest direction)", "{:.3f}"),
        FeatureSpec("laplacian_var", 1e-6, "Laplacian variance", "{:.2g}"),
        FeatureSpec("noise_sigma", 0.5, "noise sigma", "{:.1f}/255"),
    ),
    "denoise": (
        FeatureSpec("noise_sigma", 0.5, "noise sigma", "{:.1f}/255"),
        FeatureSpec("luma_mean", None, "mean luminance"),
    ),
    "derain": (
        FeatureSpec("streak_coherence", None, "near-vertical bright streak coherence"),
        FeatureSpec("streak_energy", 1e-3, "thin bright detail energy", "{:.3f}"),
        FeatureSpec("blob_density", 0.5, "bright blobs per 10k px", "{:.1f}"),
    ),
    "desnow": (
        FeatureSpec("blob_coverage", None, "share of the frame holding bright blobs", "{:.0%}"),
        FeatureSpec("blob_density", 0.5, "small bright blobs per 10k px", "{:.1f}"),
        FeatureSpec("streak_coherence", None, "near-vertical bright streak coherence"),
        FeatureSpec("dark_channel_mean", None, "dark channel mean"),
    ),
    "demoire": (
        FeatureSpec("chroma_peak", None, "colour spectrum peak (log10 above background)"),
        FeatureSpec("spectral_peak", None, "luminance spectrum peak (log10 above background)"),
    ),
    "highlight": (
        FeatureSpec("highlight_fraction", 1e-4, "share of pixels in saturated low-chroma blobs", "{:.2%}"),
        # Specular highlights are few; dozens of bright blobs are rain or snow.
        FeatureSpec("highlight_blobs", 1.0, "saturated low-chroma blobs", "{:.0f}"),
        FeatureSpec("blob_coverage", None, "share of the frame holding bright blobs", "{:.0%}"),
    ),
}

#: How the evidence names the degradation when its threshold is quoted.
_CONDITION = {
    "dehaze": "haze",
    "lowlight": "low light",
    "deblur": "blur",
    "denoise": "noise",
    "derain": "rain",
    "desnow": "snow",
    "demoire": "moire",
    "highlight": "highlights",
}


# ------------------------------------------------------------------------------------------- input handling


def _as_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB view of any PIL mode; 16-bit and float greyscale are rescaled instead of clipped at 255."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        # convert("RGB") would clip 16-bit values at 255 and turn most of the picture white.
        values = np.asarray(image.convert("F"), dtype=np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max()) if values.size else 0.0
        scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
        grey = np.clip(np.round(values / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return image.convert("RGB")


def _working_copy(rgb: Image.Image) -> np.ndarray:
    width, height = rgb.size
    longest = max(width, height)
    if longest > WORKING_SIZE:
        factor = WORKING_SIZE / longest
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
        # reducing_gap first box-shrinks by an integer factor: as good as plain Lanczos and much faster.
        rgb = rgb.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def _native_crop(rgb: Image.Image) -> np.ndarray:
    """Centre crop at full resolution: downscaling averages noise away, so noise is measured before it."""
    width, height = rgb.size
    side = WORKING_SIZE
    left, top = max(0, (width - side) // 2), max(0, (height - side) // 2)
    crop = rgb.crop((left, top, min(width, left + side), min(height, top + side)))
    return np.asarray(crop, dtype=np.float32) / 255.0


def _scaled(size: float, shape: tuple[int, ...], minimum: int = 3) -> int:
    """An odd window size tuned at WORKING_SIZE, shrunk for smaller images so it stays relative to the frame."""
    scaled = max(minimum, round(size * max(shape[:2]) / WORKING_SIZE))
    return scaled | 1


# ---------------------------------------------------------------------------------------------- statistics


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _haze_and_tone(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # Dark channel prior (He et al. 2009): in haze-free patches some channel is near zero; airlight lifts it.
    patch = _scaled(15, rgb.shape)
    dark = ndimage.minimum_filter(rgb.min(axis=2), size=patch, mode="nearest")
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.where(high > 1e-3, (high - low) / np.maximum(high, 1e-3), 0.0)
    return {
        "dark_channel_mean": float(dark.mean()),
        "luma_mean": float(luma.mean()),
        "luma_std": float(luma.std()),
        "luma_p95": float(np.percentile(luma, 95)),
        # 0.1 is about the level below which an 8-bit sRGB shadow holds no readable detail.
        "shadow_fraction": float((luma < 0.1).mean()),
        "saturation_mean": float(saturation.mean()),
    }


def _noise_sigma(native: np.ndarray) -> float:
    """Robust noise sigma in 8-bit levels: MAD of a Laplacian-like residual on the flattest half of the image.

    The 3x3 kernel (Immerkaer 1996) cancels linear ramps; edges still leak into it, so only pixels with a
    below-median gradient count and the median absolute deviation (Donoho) ignores the rest.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    sigmas = []
    for channel in np.moveaxis(native, 2, 0):
        if min(channel.shape) < 3:
            return 0.0
        residual = ndimage.convolve(channel, kernel, mode="reflect")[1:-1, 1:-1]
        gradient = np.hypot(ndimage.sobel(channel, 0), ndimage.sobel(channel, 1))[1:-1, 1:-1]
        flat = gradient <= np.median(gradient)
        values = np.abs(residual[flat]) if flat.any() else np.abs(residual).ravel()
        # 6 = L2 norm of the kernel; 1.4826 turns a MAD into a Gaussian sigma.
        sigmas.append(1.4826 * float(np.median(values)) / 6.0)
    return float(np.mean(sigmas)) * 255.0


def _sharpness(luma: np.ndarray) -> dict[str, float]:
    # A light pre-blur keeps pixel noise from posing as sharp edges.
    smooth = ndimage.gaussian_filter(luma, 0.7)
    gy, gx = ndimage.sobel(smooth, 0) / 8.0, ndimage.sobel(smooth, 1) / 8.0
    contrast = max(float(np.percentile(luma, 99) - np.percentile(luma, 1)), 0.05)
    # Motion blur smears edges along one direction only, so look at the steepest edges per direction and keep
    # the weakest direction: a sharp photo is steep in all of them.
    slopes = []
    for angle in np.linspace(0.0, np.pi, 8, endpoint=False):
        directional = np.abs(np.cos(angle) * gx + np.sin(angle) * gy)
        slopes.append(float(np.percentile(directional, 99.5)) / contrast)
    return {
        "edge_slope_min": min(slopes),
        "edge_slope_max": max(slopes),
        "laplacian_var": float(ndimage.laplace(luma).var()),
    }


def _bright_details(rgb: np.ndarray, luma: np.ndarray, noise_sigma: float) -> dict[str, float]:
    """Rain streaks and snow flakes: thin or small structures brighter than their surroundings."""
    # White top-hat keeps bright things narrower than the window and drops edges and smooth shading.
    thin = ndimage.white_tophat(luma, size=_scaled(5, luma.shape))
    energy = float(thin.mean())
    # Global structure tensor of the streak map: rain streaks share one orientation, texture does not.
    gy, gx = ndimage.sobel(thin, 0), ndimage.sobel(thin, 1)
    jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
    trace = jxx + jyy
    coherence = math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / trace if trace > 1e-12 else 0.0
    # Dominant gradient direction; streaks run perpendicular to it. 0 rad = vertical streaks (gradient along x).
    gradient_angle = 0.5 * math.atan2(2 * jxy, jxx - jyy)
    tilt = abs(math.degrees(gradient_angle))
    # Rain falls within about 30 degrees of vertical; fade the score out by 50 degrees so buildings' horizontal
    # lines or striped fabric at other angles do not read as rain.
    vertical = min(1.0, max(0.0, (50.0 - tilt) / 20.0))

    # Snow: compact near-white blobs standing clearly above the noise. Whiteness keeps coloured glints out, and
    # counting only blobs on a smooth background keeps out bright texture (foliage, fabric, gravel), which
    # otherwise outnumbers the flakes; flakes also fall over sky and walls, where texture does not sit.
    blobs = ndimage.white_tophat(luma, size=_scaled(13, luma.shape))
    background = luma - blobs
    mean = ndimage.uniform_filter(background, 9)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(background * background, 9) - mean * mean, 0.0))
    level = max(0.12, 4.0 * noise_sigma / 255.0)
    white = (luma > 0.7) & (rgb.max(axis=2) - rgb.min(axis=2) < 0.2)
    labels, count = ndimage.label((blobs > level) & white)
    density = coverage = 0.0
    if count:
        index = np.arange(1, count + 1)
        areas = ndimage.sum_labels(np.ones_like(luma), labels, index)
        flat = (np.asarray(ndimage.minimum(spread, labels, index)) < 0.03) & (
            areas <= 400 * (max(luma.shape) / WORKING_SIZE) ** 2
        )
        density = float(flat.sum()) * 1e4 / luma.size
        # Snow covers the whole frame evenly: the share of an 8x8 grid's cells holding a flake.
        centres = np.array(ndimage.center_of_mass(np.ones_like(luma), labels, index))[flat]
        if len(centres):
            cells = {(int(y * 8 / luma.shape[0]), int(x * 8 / luma.shape[1])) for y, x in centres}
            coverage = len(cells) / 64
    return {
        "streak_energy": energy,
        "streak_coherence": coherence * vertical,
        "streak_tilt": tilt,
        "blob_density": density,
        "blob_coverage": coverage,
    }


def _spectral_peak(channel: np.ndarray) -> float:
    """Height (log10 of power) of the strongest narrow spectral peak above its neighbourhood, away from DC.

    Moire is a near-periodic interference pattern, so it shows up as isolated spikes; natural images have a
    smooth 1/f spectrum. The Hann window removes the cross that image borders would otherwise draw.
    """
    height, width = channel.shape
    if min(height, width) < 16:
        return 0.0
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    power = np.abs(np.fft.fftshift(np.fft.fft2((channel - channel.mean()) * window))) ** 2
    log_power = np.log10(power + 1e-12)
    background = ndimage.uniform_filter(log_power, size=9, mode="wrap")
    fy = (np.arange(height) - height // 2)[:, None] / height
    fx = (np.arange(width) - width // 2)[None, :] / width
    radius = np.hypot(fy, fx)
    # Skip the lowest frequencies (steep 1/f slope) and the axes, where JPEG blocks and straight horizons or
    # walls put energy even with the window.
    keep = (radius > 0.04) & (np.abs(fx) > 2.0 / width) & (np.abs(fy) > 2.0 / height)
    if not keep.any():
        return 0.0
    return float((log_power - background)[keep].max())


def _moire(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # Colour moire lives in the chroma channels, where natural photos have almost no fine periodic structure.
    cb = rgb[..., 2] - luma
    cr = rgb[..., 0] - luma
    return {
        "spectral_peak": _spectral_peak(luma),
        "chroma_peak": max(_spectral_peak(cb), _spectral_peak(cr)),
    }


def _highlights(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # Specular reflections keep the light source's colour (near white) and clip the sensor.
    chroma = rgb.max(axis=2) - rgb.min(axis=2)
    mask = (luma > 0.9) & (chroma < 0.12)
    labels, count = ndimage.label(mask)
    if count == 0:
        return {"highlight_fraction": 0.0, "highlight_blobs": 0.0}
    index = np.arange(1, count + 1)
    areas = ndimage.sum_labels(np.ones_like(luma), labels, index)
    # Compact blobs brighter than their neighbourhood; big bright regions (overcast sky, a white wall) are
    # exposure, not specular highlights.
    # The neighbourhood is wide (a fifth of the frame) so that even a large highlight does not fill it.
    surround = ndimage.uniform_filter(luma, size=_scaled(101, luma.shape))
    lift = ndimage.mean(luma - surround, labels, index)
    min_area = 6 * (max(luma.shape) / WORKING_SIZE) ** 2
    keep = (areas >= min_area) & (areas <= 0.05 * luma.size) & (np.asarray(lift) > 0.15)
    return {
        "highlight_fraction": float(areas[keep].sum() / luma.size),
        "highlight_blobs": float(keep.sum()),
    }


def measure(image: Image.Image) -> dict[str, float]:
    """The raw statistics `detect` works from, by name; all finite (see docs/detector.md for their meaning).

    Intensities are in [0, 1] except `noise_sigma` (8-bit levels); `blob_density` is per 10,000 pixels.
    """
    rgb_image = _as_rgb(image)
    rgb = _working_copy(rgb_image)
    luma = _luma(rgb)
    stats: dict[str, float] = {}
    stats.update(_haze_and_tone(rgb, luma))
    stats["noise_sigma"] = _noise_sigma(_native_crop(rgb_image))
    stats.update(_sharpness(luma))
    stats.update(_bright_details(rgb, luma, stats["noise_sigma"]))
    stats.update(_moire(rgb, luma))
    stats.update(_highlights(rgb, luma))
    # Degenerate inputs (a flat 1x1 image) must not hand NaN to the planner.
    return {name: float(np.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)) for name, value in stats.items()}


# ------------------------------------------------------------------------------------------ calibration


@lru_cache(maxsize=1)
def load_calibration(path: Path = CALIBRATION_PATH) -> dict[str, Any]:
    """Fitted logistic parameters per task, checked against FEATURES.

    Raises `ValueError` naming the file and the fix when it is missing or was fitted on other features.
    """
    try:
        calibration = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: cannot read detector calibration ({error}); "
            "regenerate it with `python benchmarks/detector_accuracy.py --write`"
        ) from error
    models = calibration.get("tasks", {})
    for task in TASKS:
        model = models.get(task)
        expected = [spec.name for spec in FEATURES[task]]
        if model is None or model.get("features") != expected:
            raise ValueError(
                f"{path}: task {task!r} was fitted on {None if model is None else model.get('features')}, "
                f"detector uses {expected}; rerun `python benchmarks/detector_accuracy.py --write`"
            )
        for key in ("mean", "scale", "weights"):
            if len(model[key]) != len(expected):
                raise ValueError(f"{path}: task {task!r} has {len(model[key])} {key}, expected {len(expected)}")
    return calibration


def _logit(model: dict[str, Any], inputs: list[float]) -> float:
    z = float(model["bias"])
    for x, mean, scale, weight in zip(inputs, model["mean"], model["scale"], model["weights"], strict=True):
        z += weight * (x - mean) / scale
    return z


def confidence(task: str, stats: dict[str, float], calibration: dict[str, Any] | None = None) -> float:
    """Calibrated probability that `task` is needed, from statistics returned by `measure`."""
    model = (calibration or load_calibration())["tasks"][task]
    inputs = [spec.transform(stats[spec.name]) for spec in FEATURES[task]]
    z = _logit(model, inputs)
    # Clamp before exp so extreme statistics cannot overflow.
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


def _evidence(task: str, stats: dict[str, float], model: dict[str, Any]) -> str:
    """Primary statistic and the value where it would tip the decision, the other statistics held fixed."""
    primary = FEATURES[task][0]
    value = stats[primary.name]
    text = f"{primary.label} {primary.unit_format.format(value)}"
    weight = float(model["weights"][0])
    if abs(weight) < 1e-9:
        return text
    inputs = [spec.transform(stats[spec.name]) for spec in FEATURES[task]]
    rest = _logit(model, inputs) - weight * (inputs[0] - model["mean"][0]) / model["scale"][0]
    boundary = primary.inverse(model["mean"][0] - rest * model["scale"][0] / weight)
    direction = "above" if weight > 0 else "below"
    if not math.isfinite(boundary):
        return text
    return f"{text} ({_CONDITION[task]} {direction} {primary.unit_format.format(boundary)})"


def detect(image: Image.Image, threshold: float = 0.5) -> list[Finding]:
    """Tasks whose calibrated confidence is at least `threshold`, most confident first.

    Args:
        image (`PIL.Image.Image`): the photo, any mode and size (alpha is ignored, 16-bit is rescaled).
        threshold (`float`, *optional*, defaults to 0.5): smallest confidence to report, in [0, 1].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}; 0.5 reports even-odds findings")
    calibration = load_calibration()
    stats = measure(image)
    findings = []
    for task in TASKS:
        score = confidence(task, stats, calibration)
        if score >= threshold:
            findings.append(Finding(task, round(score, 4), _evidence(task, stats, calibration["tasks"][task])))
    return sorted(findings, key=lambda finding: finding.confidence, reverse=True)
