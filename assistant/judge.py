"""The judge: did an edit step make the photo better or worse? No reference photo, only the step's input and output.

Two parts, both cheap enough to run after every step:

1. **Damage checks** (`assistant.quality`): gross failures a user sees at once — detail lost, contrast flattened,
   a colour cast or clipped areas added — each judged only where the task is not meant to change that measure.
2. **A calibrated verdict**: a small neural network per task (one hidden layer of 32) over how no-reference features
   changed from input to output and what the step did, fitted on synthetic before/after pairs whose truth is known
   (full-reference PSNR and SSIM against the clean photo agree that the step helped, or agree that it hurt); see
   `benchmarks/judge_calibration.py`, which writes `judge_calibration.json` beside this module.

The features (all on a luminance/RGB copy at most `JUDGE_SIZE` px on its long side):

- natural-scene statistics of the mean-subtracted contrast-normalised (MSCN) coefficients, as in BRISQUE
  (Mittal, Moorthy and Bovik, IEEE TIP 2012): their variance and kurtosis and the mean of the products of
  horizontal and vertical neighbours, at two scales. Noise, blur, blocks and painted-over areas all move them
  away from what natural photos show. No packaged BRISQUE/NIQE model can be used here (pyiqa and piq download
  their weights at run time; the `brisque` wheel needs a compiled libsvm and pickles), so the statistics are
  computed here and the model is fitted to our own pairs;
- degradation proxies: dark-channel mean (haze), mean and 5th/95th percentiles of luminance (low light),
  Immerkaer noise sigma (noise), Laplacian variance (blur, detail), white top-hat energy (rain, snow),
  8x8 blockiness (JPEG and painted blocks), share of flat pixels (filled-in areas), clipped share, colour
  cast, colourfulness (over-saturation), edge steepness at full against half resolution (blur, without the
  scene's contrast) and share of colourless near-white pixels (glare);
- what the step did, on input and output together (`pair_features`): how much changed, where the two stop
  looking alike, texture lost and added, fine detail removed or reinforced, halos, and colour shifts.

Everything is computed with OpenCV filters on the small copy, so a judgement costs a few milliseconds whatever
the photo's size.

A photo the features cannot be computed on (1x1, NaN) gets no verdict: the caller keeps the step and says so.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from assistant.quality import Measures, measure_array
from assistant.quality import judge as judge_damage

JUDGE_SIZE = 256
CALIBRATION_PATH = Path(__file__).with_name("judge_calibration.json")

FEATURE_NAMES = (
    "mscn_var_1", "mscn_kurt_1", "mscn_h_1", "mscn_v_1", "mscn_var_2", "mscn_kurt_2", "mscn_h_2", "mscn_v_2",
    "dark_channel", "luma_mean", "luma_p05", "luma_p95", "noise_sigma", "log_laplacian", "tophat",
    "blockiness", "flat", "clipped", "cast", "luma_std", "colourfulness", "edge_ratio", "glare",
)
#: What one step did, measured on the input and output together (see `pair_features`).
PAIR_FEATURE_NAMES = (
    "mean_abs_change", "ssim", "ssim_low", "texture_lost", "texture_added", "detail_correlation", "detail_gain",
    "overshoot", "chroma_change",
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHROMA = np.array([[-0.168736, 0.5], [-0.331264, -0.418688], [0.5, -0.081312]], dtype=np.float32)
_SQUARE_5 = np.ones((5, 5), np.uint8)


class JudgeUnavailable(ValueError):
    """The photo is too small or not finite to judge; the step is kept with a note."""


@dataclass(frozen=True)
class Features:
    """No-reference features of one photo (`FEATURE_NAMES`), plus the small copy they were measured on, which
    `pair_features` compares with another photo's."""

    values: np.ndarray
    small: np.ndarray  # H x W x 3 float32 in [0, 1], long side <= JUDGE_SIZE
    luma: np.ndarray  # H x W float32

    def as_dict(self) -> dict[str, float]:
        return {name: round(float(v), 5) for name, v in zip(FEATURE_NAMES, self.values, strict=True)}


def small_copy(image: PIL.Image.Image) -> np.ndarray:
    """RGB in [0, 1], at most JUDGE_SIZE px on the long side: a 24 MP photo costs what a small one does."""
    if image.width < 8 or image.height < 8:
        raise JudgeUnavailable(f"the photo is too small to judge ({image.width}x{image.height})")
    rgb = image.convert("RGB")
    scale = JUDGE_SIZE / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale))),
                         PIL.Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.float32) / 255.0


def features(image: PIL.Image.Image) -> Features:
    return features_of(small_copy(image))


def features_of(small: np.ndarray) -> Features:
    luma = small @ _LUMA
    half = cv2.resize(luma, (max(1, luma.shape[1] // 2), max(1, luma.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    planes = _Planes(*cv2.split(small))  # contiguous: numpy's reductions over the last axis are slow
    values = np.array([*_mscn_stats(luma), *_mscn_stats(half), *_proxies(small, planes, luma),
                       _edge_ratio(luma, half), _glare(planes, luma)], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise JudgeUnavailable("the photo's statistics are not finite")
    return Features(values, small, luma)


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(array, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _mscn_stats(luma: np.ndarray) -> tuple[float, float, float, float]:
    mu = _blur(luma, 7 / 6)
    sigma = np.sqrt(np.abs(_blur(luma * luma, 7 / 6) - mu * mu))
    mscn = (luma - mu) / (sigma + 1.0 / 255.0)
    var = float(mscn.var())
    squared = np.square(mscn - mscn.mean())
    kurt = float(np.square(squared).mean() / max(var * var, 1e-12))
    horizontal = float((mscn[:, :-1] * mscn[:, 1:]).mean())
    vertical = float((mscn[:-1, :] * mscn[1:, :]).mean())
    # Any distribution with a spread has a kurtosis of at least 1; a flat photo has none (0 here).
    return var, math.log(max(kurt, 1e-6)), horizontal, vertical


def _local_std(luma: np.ndarray) -> np.ndarray:
    mean = cv2.blur(luma, (5, 5))
    return np.sqrt(np.maximum(cv2.blur(luma * luma, (5, 5)) - mean * mean, 0.0))


@dataclass(frozen=True)
class _Planes:
    red: np.ndarray
    green: np.ndarray
    blue: np.ndarray

    @property
    def lowest(self) -> np.ndarray:
        return cv2.min(cv2.min(self.red, self.green), self.blue)

    @property
    def highest(self) -> np.ndarray:
        return cv2.max(cv2.max(self.red, self.green), self.blue)


def _proxies(rgb: np.ndarray, planes: _Planes, luma: np.ndarray) -> list[float]:
    dark = cv2.erode(planes.lowest, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REFLECT)
    p05, p95 = np.percentile(luma[::2, ::2], (5, 95))
    # Immerkaer (1996): a 3x3 mask that cancels image structure up to second order leaves mostly noise.
    residual = cv2.filter2D(luma, -1, np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32))
    noise = math.sqrt(math.pi / 2) * float(np.abs(residual[1:-1, 1:-1]).mean()) / 6.0
    laplacian = cv2.Laplacian(luma, cv2.CV_32F)[1:-1, 1:-1]
    tophat = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, _SQUARE_5)
    cb, cr = (rgb.reshape(-1, 3) @ _CHROMA).mean(axis=0)
    # Hasler and Suesstrunk (2003): colourfulness from the opponent channels rg and yb.
    rg = planes.red - planes.green
    yb = 0.5 * (planes.red + planes.green) - planes.blue
    colourful = math.hypot(float(rg.std()), float(yb.std())) + 0.3 * math.hypot(float(rg.mean()), float(yb.mean()))
    return [float(dark.mean()), float(luma.mean()), float(p05), float(p95), noise,
            math.log(float(laplacian.var()) + 1e-6), float(tophat.mean()), _blockiness(luma),
            float((_local_std(luma) < 1.5 / 255).mean()), float(((luma < 0.02) | (luma > 0.98)).mean()),
            math.hypot(float(cb), float(cr)), float(luma.std()), colourful]


def _steepest(luma: np.ndarray) -> float:
    return float(max(np.percentile(np.abs(np.diff(luma, axis=axis)), 99.5) for axis in (0, 1)))


def _edge_ratio(luma: np.ndarray, half: np.ndarray) -> float:
    """The steepest edges per pixel at full against half resolution: about 1 for a sharp step, towards 0.5 for an
    edge blurred over a few pixels; unlike the Laplacian it does not grow with the scene's contrast."""
    return _steepest(luma) / (_steepest(half) + 1e-4)


def _glare(planes: _Planes, luma: np.ndarray) -> float:
    """Share of near-white, nearly colourless pixels: specular highlights and blown skies."""
    return float(((luma > 0.9) & (planes.highest - planes.lowest < 0.12)).mean())


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


def _same_size(before: Features, after: Features) -> tuple[np.ndarray, np.ndarray]:
    if before.small.shape == after.small.shape:
        return after.small, after.luma
    height, width = before.small.shape[:2]
    small = cv2.resize(after.small, (width, height), interpolation=cv2.INTER_AREA)
    return small, small @ _LUMA


def pair_features(before: Features, after: Features) -> list[float]:
    """What the step did, seen on both photos at once (`PAIR_FEATURE_NAMES`):

    - the mean absolute change;
    - SSIM between input and output (Wang et al. 2004, 7x7 Gaussian window) and the share of pixels where it is
      under 0.5: an edit that changes a few places beyond recognition (painted fills, blotches) has a low tail;
    - texture lost (local contrast fell below 40% of the input's where there was texture: smears, fills) and
      texture added (the reverse where the input was flat: stripes, ringing, blocks, grain);
    - the correlation of the change's fine detail with the input's fine detail (removing rain or noise takes
      detail away, negative; sharpening adds to it, positive) and the log ratio of fine-detail energy;
    - overshoot: share of pixels pushed more than 3/255 outside the range of their input 5x5 neighbourhood, which
      is what halos and deconvolution ringing do and what a faithful restoration rarely needs;
    - the mean change of the chroma.
    """
    small, luma = _same_size(before, after)
    b, a = before.luma, luma
    mean_b, mean_a = _blur(b, 1.5), _blur(a, 1.5)
    var_b = _blur(b * b, 1.5) - mean_b * mean_b
    var_a = _blur(a * a, 1.5) - mean_a * mean_a
    cov = _blur(a * b, 1.5) - mean_a * mean_b
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))
    std_b, std_a = _local_std(b), _local_std(a)
    lost = float(((std_b > 0.02) & (std_a < 0.4 * std_b)).mean())
    added = float(((std_a > 0.02) & (std_b < 0.4 * std_a)).mean())
    detail_b = b - _blur(b, 1.0)
    detail_change = (a - b) - _blur(a - b, 1.0)
    norm = float(np.sqrt((detail_b**2).sum() * (detail_change**2).sum()))
    correlation = float((detail_b * detail_change).sum()) / norm if norm > 1e-12 else 0.0
    detail_a = detail_b + detail_change
    gain = math.log((float((detail_a**2).mean()) + 1e-8) / (float((detail_b**2).mean()) + 1e-8))
    high = cv2.dilate(b, _SQUARE_5) + 3 / 255
    low = cv2.erode(b, _SQUARE_5) - 3 / 255
    overshoot = float(((a > high) | (a < low)).mean())
    chroma = float(np.abs((small - before.small).reshape(-1, 3) @ _CHROMA).mean())
    return [float(np.abs(small - before.small).mean()), float(ssim.mean()), float((ssim < 0.5).mean()), lost,
            added, correlation, gain, overshoot, chroma]


def change_vector(before: Features, after: Features) -> np.ndarray:
    """The model's input: after - before for every feature, the input's own features (whether brightening or
    smoothing helps depends on where the photo starts), and what the step did (`pair_features`)."""
    return np.concatenate([after.values - before.values, before.values, pair_features(before, after)])


@dataclass(frozen=True)
class Judgement:
    """`better`: the calibrated probability that the step helped (None: no model for this task)."""

    better: float | None
    task: str

    @property
    def worse(self) -> bool:
        return self.better is not None and self.better < 0.5


@dataclass(frozen=True)
class TaskModel:
    """One task's calibrated verdict: a small multilayer perceptron (ReLU between layers, a logistic output) on
    the standardised `change_vector`; one layer is a plain logistic regression."""

    mean: np.ndarray
    scale: np.ndarray
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weights in x out, bias)

    def chance_better(self, x: np.ndarray) -> float:
        hidden = (x - self.mean) / self.scale
        for depth, (weights, bias) in enumerate(self.layers):
            hidden = hidden @ weights + bias
            if depth < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        logit = float(hidden.reshape(-1)[0])
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))


@lru_cache(maxsize=1)
def calibration() -> dict[str, TaskModel]:
    """The task models in `judge_calibration.json` (written by benchmarks/judge_calibration.py)."""
    if not CALIBRATION_PATH.is_file():
        return {}
    stored = json.loads(CALIBRATION_PATH.read_text(encoding="utf-8"))["tasks"]
    return {task: TaskModel(np.asarray(m["mean"]), np.asarray(m["scale"]),
                            tuple((np.asarray(w), np.asarray(b)) for w, b in m["layers"]))
            for task, m in stored.items()}


def judge_change(before: Features, after: Features, task: str) -> Judgement:
    model = calibration().get(task)
    change = change_vector(before, after)
    if model is None or not np.all(np.isfinite(change)):  # no model, or a step the features cannot describe
        return Judgement(None, task)
    return Judgement(model.chance_better(change), task)


@dataclass(frozen=True)
class Seen:
    """A photo as the judge sees it; `features`/`quality` are None when it cannot be measured (1x1, NaN)."""

    image: PIL.Image.Image
    features: Features | None
    quality: Measures | None


def look(image: PIL.Image.Image) -> Seen:
    try:
        seen = features(image)
    except JudgeUnavailable:
        return Seen(image, None, None)
    return Seen(image, seen, measure_array(seen.small))


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
