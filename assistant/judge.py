"""The judge: did an edit step make the photo better or worse? No reference photo, only the step's input and output.

Two parts, both cheap enough to run after every step:

1. **Damage checks** (`assistant.quality`): gross failures a user sees at once — detail lost, contrast flattened,
   a colour cast or clipped areas added — each judged only where the task is not meant to change that measure.
2. **A calibrated verdict**: a logistic model per task over how no-reference features changed from input to
   output, fitted on synthetic before/after pairs whose truth is known (full-reference PSNR and SSIM against the
   clean photo agree that the step helped, or agree that it hurt); see `benchmarks/judge_calibration.py`, which
   writes `judge_calibration.json` beside this module.

The features (all on a luminance/RGB copy at most `JUDGE_SIZE` px on its long side):

- natural-scene statistics of the mean-subtracted contrast-normalised (MSCN) coefficients, as in BRISQUE
  (Mittal, Moorthy and Bovik, IEEE TIP 2012): their variance and kurtosis and the mean of the products of
  horizontal and vertical neighbours, at two scales. Noise, blur, blocks and painted-over areas all move them
  away from what natural photos show. No packaged BRISQUE/NIQE model can be used here (pyiqa and piq download
  their weights at run time; the `brisque` wheel needs a compiled libsvm and pickles), so the statistics are
  computed here and the model is fitted to our own pairs;
- degradation proxies: dark-channel mean (haze), mean and 5th/95th percentiles of luminance (low light),
  Immerkaer noise sigma (noise), Laplacian variance (blur, detail), white top-hat energy (rain, snow),
  8x8 blockiness (JPEG and painted blocks), share of flat pixels (filled-in areas), clipped share and colour
  cast;
- how much the step changed: mean absolute difference.

A photo the features cannot be computed on (1x1, NaN) gets no verdict: the caller keeps the step and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import PIL.Image
from scipy import ndimage

from assistant.quality import Measures, measure
from assistant.quality import judge as judge_damage

JUDGE_SIZE = 256
CALIBRATION_PATH = Path(__file__).with_name("judge_calibration.json")

FEATURE_NAMES = (
    "mscn_var_1", "mscn_kurt_1", "mscn_h_1", "mscn_v_1", "mscn_var_2", "mscn_kurt_2", "mscn_h_2", "mscn_v_2",
    "dark_channel", "luma_mean", "luma_p05", "luma_p95", "noise_sigma", "log_laplacian", "tophat",
    "blockiness", "flat", "clipped", "cast", "luma_std",
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class JudgeUnavailable(ValueError):
    """The photo is too small or not finite to judge; the step is kept with a note."""


@dataclass(frozen=True)
class Features:
    """No-reference features of one photo (`FEATURE_NAMES`), plus its small RGB copy for the change measure."""

    values: np.ndarray
    small: np.ndarray  # H x W x 3 float32 in [0, 1], long side <= JUDGE_SIZE

    def as_dict(self) -> dict[str, float]:
        return {name: round(float(v), 5) for name, v in zip(FEATURE_NAMES, self.values, strict=True)}


def features(image: PIL.Image.Image) -> Features:
    if image.width < 8 or image.height < 8:
        raise JudgeUnavailable(f"the photo is too small to judge ({image.width}x{image.height})")
    rgb = image.convert("RGB")
    scale = JUDGE_SIZE / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale))),
                         PIL.Image.Resampling.BILINEAR, reducing_gap=2.0)
    small = np.asarray(rgb, dtype=np.float32) / 255.0
    luma = small @ _LUMA
    values = np.array([*_mscn_stats(luma), *_mscn_stats(_half(luma)), *_proxies(small, luma)], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise JudgeUnavailable("the photo's statistics are not finite")
    return Features(values, small)


def _half(luma: np.ndarray) -> np.ndarray:
    h, w = luma.shape[0] // 2 * 2, luma.shape[1] // 2 * 2
    return luma[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _mscn_stats(luma: np.ndarray) -> tuple[float, float, float, float]:
    mu = ndimage.gaussian_filter(luma, 7 / 6, truncate=3.0)
    sigma = np.sqrt(np.abs(ndimage.gaussian_filter(luma * luma, 7 / 6, truncate=3.0) - mu * mu))
    mscn = (luma - mu) / (sigma + 1.0 / 255.0)
    var = float(mscn.var())
    kurt = float(((mscn - mscn.mean()) ** 4).mean() / max(var * var, 1e-12))
    horizontal = float((mscn[:, :-1] * mscn[:, 1:]).mean())
    vertical = float((mscn[:-1, :] * mscn[1:, :]).mean())
    return var, math.log(kurt), horizontal, vertical


def _proxies(rgb: np.ndarray, luma: np.ndarray) -> list[float]:
    dark = ndimage.minimum_filter(rgb.min(axis=2), size=7)
    p05, p95 = np.percentile(luma, (5, 95))
    # Immerkaer (1996): a 3x3 mask that cancels image structure up to second order leaves mostly noise.
    residual = (luma[:-2, :-2] + luma[:-2, 2:] + luma[2:, :-2] + luma[2:, 2:]
                - 2 * (luma[1:-1, :-2] + luma[1:-1, 2:] + luma[:-2, 1:-1] + luma[2:, 1:-1]) + 4 * luma[1:-1, 1:-1])
    noise = math.sqrt(math.pi / 2) * float(np.abs(residual).mean()) / 6.0
    laplacian = (luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:]) - 4 * luma[1:-1, 1:-1]
    tophat = luma - ndimage.grey_opening(luma, size=(5, 5))
    local_mean = ndimage.uniform_filter(luma, 5)
    local_var = ndimage.uniform_filter(luma * luma, 5) - local_mean * local_mean
    cb = float((rgb @ np.array([-0.168736, -0.331264, 0.5], dtype=np.float32)).mean())
    cr = float((rgb @ np.array([0.5, -0.418688, -0.081312], dtype=np.float32)).mean())
    return [float(dark.mean()), float(luma.mean()), float(p05), float(p95), noise,
            math.log(float(laplacian.var()) + 1e-6), float(tophat.mean()), _blockiness(luma),
            float((local_var < (1.5 / 255) ** 2).mean()), float(((luma < 0.02) | (luma > 0.98)).mean()),
            math.hypot(cb, cr), float(luma.std())]


def _blockiness(luma: np.ndarray) -> float:
    """Mean jump across every 8th column and row against the mean jump elsewhere (1: no blocks)."""
    dx = np.abs(np.diff(luma, axis=1)).mean(axis=0)
    dy = np.abs(np.diff(luma, axis=0)).mean(axis=1)
    ratios = []
    for d in (dx, dy):
        on = d[7::8]
        off = np.delete(d, np.s_[7::8])
        if on.size and off.size:
            ratios.append(float(on.mean()) / (float(off.mean()) + 1e-4))
    return float(np.mean(ratios)) if ratios else 1.0


def change_vector(before: Features, after: Features) -> np.ndarray:
    """The model's input: after - before for every feature, the input's own features (whether brightening or
    smoothing helps depends on where the photo starts), and the mean absolute difference of the copies."""
    if before.small.shape != after.small.shape:
        resized = PIL.Image.fromarray((after.small * 255).astype(np.uint8)).resize(before.small.shape[1::-1])
        after_small = np.asarray(resized, dtype=np.float32) / 255.0
    else:
        after_small = after.small
    return np.concatenate([after.values - before.values, before.values,
                           [float(np.abs(after_small - before.small).mean())]])


@dataclass(frozen=True)
class Judgement:
    """`better`: the calibrated probability that the step helped (None: no model for this task)."""

    better: float | None
    task: str

    @property
    def worse(self) -> bool:
        return self.better is not None and self.better < 0.5


@lru_cache(maxsize=1)
def calibration() -> dict[str, dict[str, list[float]]]:
    """Per task: `mean`, `scale` (standardisation) and `weights` (bias last) of the logistic model."""
    if not CALIBRATION_PATH.is_file():
        return {}
    return json.loads(CALIBRATION_PATH.read_text(encoding="utf-8"))["tasks"]


def judge_change(before: Features, after: Features, task: str) -> Judgement:
    model = calibration().get(task)
    if model is None:
        return Judgement(None, task)
    x = (change_vector(before, after) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    weights = np.asarray(model["weights"])
    logit = float(x @ weights[:-1] + weights[-1])
    return Judgement(1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit)))), task)


@dataclass(frozen=True)
class Seen:
    """A photo as the judge sees it; `features`/`quality` are None when it cannot be measured (1x1, NaN)."""

    image: PIL.Image.Image
    features: Features | None
    quality: Measures | None


def look(image: PIL.Image.Image) -> Seen:
    try:
        return Seen(image, features(image), measure(image))
    except ValueError:  # JudgeUnavailable, or an empty photo
        return Seen(image, None, None)


@dataclass(frozen=True)
class Assessment:
    """The verdict on one step: `worse`, the calibrated chance it `better`-ed the photo (None: this task has no
    model, the damage checks alone decided), and the reasons in words."""

    worse: bool
    better: float | None
    reasons: list[str]

    @property
    def score(self) -> float:
        return 0.5 if self.better is None else self.better


def assess(before: Seen, after: Seen, task: str) -> Assessment:
    """Damage checks, then the calibrated verdict. A photo the judge cannot measure is never judged worse."""
    if before.features is None or after.features is None or before.quality is None or after.quality is None:
        return Assessment(False, None, ["the judge could not measure this photo, so the step was kept unjudged"])
    damage = judge_damage(before.quality, after.quality, task)
    calibrated = judge_change(before.features, after.features, task)
    reasons = list(damage.reasons)
    if calibrated.worse:
        reasons.append(f"only a {calibrated.better:.0%} chance that it helped")
    return Assessment(damage.worse or calibrated.worse, calibrated.better, reasons)
