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
from functools import cached_property, lru_cache
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from assistant.quality import Measures, measure_array
from assistant.quality import judge as judge_damage
from plugins.errors import DiffPluginError

JUDGE_SIZE = 256
CALIBRATION_PATH = Path(__file__).with_name("judge_calibration.json")

FEATURE_NAMES = (
    "mscn_var_1", "mscn_kurt_1", "mscn_h_1", "mscn_v_1", "mscn_var_2", "mscn_kurt_2", "mscn_h_2", "mscn_v_2",
    "dark_channel", "luma_mean", "luma_p05", "luma_p95", "noise_sigma", "log_laplacian", "tophat",
    "blockiness", "flat", "clipped", "cast", "luma_std", "colourfulness", "edge_ratio", "glare",
)
#: Features that cannot be negative, whose change the model sees as a log ratio: a step that halves the noise or
#: doubles the contrast moves them alike on any scene, where their difference depends on the scene's own level
#: (cross-validated over photos, 83.8% -> 85.5% agreement; see docs/real-photos.md).
RATIO_FEATURES = ("mscn_var_1", "mscn_var_2", "dark_channel", "luma_mean", "luma_p05", "luma_p95", "noise_sigma",
                  "tophat", "blockiness", "flat", "clipped", "cast", "luma_std", "colourfulness", "edge_ratio", "glare")
_RATIO = np.array([name in RATIO_FEATURES for name in FEATURE_NAMES])
#: What one step did, measured on the input and output together (see `pair_features`).
PAIR_FEATURE_NAMES = (
    "mean_abs_change", "ssim", "ssim_low", "texture_lost", "texture_added", "detail_correlation", "detail_gain",
    "overshoot", "chroma_change",
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHROMA = np.array([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float32)  # Cb, Cr
_SQUARE_5 = np.ones((5, 5), np.uint8)


class JudgeUnavailable(DiffPluginError, ValueError):
    """The photo is too small or not finite to judge; the step is kept with a note."""


class _Luma:
    """A small copy's luminance and the filtered versions of it that `pair_features` compares, each computed
    the first time it is asked for: a photo is the input of several tries and the output of one, and is filtered
    once whichever it is."""

    def __init__(self, luma: np.ndarray) -> None:
        self.luma = luma

    @cached_property
    def local_std(self) -> np.ndarray:
        mean = cv2.blur(self.luma, (5, 5))
        return np.sqrt(np.maximum(cv2.blur(self.luma * self.luma, (5, 5)) - mean * mean, 0.0))

    @cached_property
    def mean(self) -> np.ndarray:  # SSIM's local mean and variance (7x7 Gaussian window)
        return _blur(self.luma, 1.5)

    @cached_property
    def mean_square(self) -> np.ndarray:
        return self.mean * self.mean

    @cached_property
    def variance(self) -> np.ndarray:
        return _blur(self.luma * self.luma, 1.5) - self.mean_square

    @cached_property
    def detail(self) -> np.ndarray:
        return self.luma - _blur(self.luma, 1.0)

    @cached_property
    def detail_energy(self) -> float:
        return cv2.norm(self.detail, cv2.NORM_L2SQR) / self.luma.size

    @cached_property
    def neighbourhood(self) -> tuple[np.ndarray, np.ndarray]:
        """The range of each pixel's 5x5 neighbourhood, widened by 3/255 (what `overshoot` tests against)."""
        return cv2.dilate(self.luma, _SQUARE_5) + 3 / 255, cv2.erode(self.luma, _SQUARE_5) - 3 / 255


@dataclass(frozen=True)
class Features:
    """No-reference features of one photo (`FEATURE_NAMES`), plus the small copy they were measured on, which
    `pair_features` compares with another photo's, and the damage checks' measures of that copy."""

    values: np.ndarray
    small: np.ndarray  # H x W x 3 float32 in [0, 1], long side <= JUDGE_SIZE
    planes: np.ndarray  # the same as 3 x H x W: OpenCV's split of float32 photos is slow, numpy's reductions too
    view: _Luma
    measures: Measures

    @property
    def luma(self) -> np.ndarray:  # H x W float32
        return self.view.luma

    def as_dict(self) -> dict[str, float]:
        return {name: round(float(v), 5) for name, v in zip(FEATURE_NAMES, self.values, strict=True)}


def small_copy(image: PIL.Image.Image) -> np.ndarray:
    """RGB in [0, 1], at most JUDGE_SIZE px on the long side: a 24 MP photo costs what a small one does."""
    if image.width < 8 or image.height < 8:
        raise JudgeUnavailable(f"the photo is too small to judge ({image.width}x{image.height})")
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # convert copies even an RGB photo
    scale = JUDGE_SIZE / max(rgb.size)
    if scale < 1:
        rgb = rgb.resize((max(8, round(rgb.width * scale)), max(8, round(rgb.height * scale))),
                         PIL.Image.Resampling.BILINEAR, reducing_gap=2.0)
    small = np.asarray(rgb, dtype=np.float32)
    small /= 255.0  # in place: one array, not two
    return small


def features(image: PIL.Image.Image) -> Features:
    return features_of(small_copy(image))


def features_of(small: np.ndarray) -> Features:
    luma = _luma(small)
    half = cv2.resize(luma, (max(1, luma.shape[1] // 2), max(1, luma.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    view = _Luma(luma)
    measures = measure_array(small, luma)
    steps = _Steps(luma)
    planes = _planes(small)
    red, green, blue = planes
    lowest, highest = cv2.min(cv2.min(red, green), blue), cv2.max(cv2.max(red, green), blue)
    values = np.array([*_mscn_stats(luma), *_mscn_stats(half), *_proxies(planes, lowest, view, measures, steps),
                       _edge_ratio(steps, _Steps(half)), _glare(lowest, highest, luma)], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise JudgeUnavailable("the photo's statistics are not finite")
    return Features(values, small, planes, view, measures)


def _planes(small: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def _luma(small: np.ndarray) -> np.ndarray:
    return small @ _LUMA


def _mean(array: np.ndarray) -> float:
    """The mean in double precision (numpy sums float32 in float32), and faster than numpy's."""
    return cv2.mean(array)[0]


def _share(mask: np.ndarray) -> float:
    return np.count_nonzero(mask) / mask.size


def _quantiles(values: np.ndarray, quantiles: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles. Each is one partial sort around its lower neighbour and the minimum
    of what lies above it: numpy's partition around several positions at once is slower than that."""
    flat = values.reshape(-1)
    found = []
    for q in quantiles:
        position = q * (flat.size - 1)
        below = math.floor(position)
        ordered = np.partition(flat, below)
        low = float(ordered[below])
        high = float(ordered[below + 1:].min()) if below + 1 < flat.size else low
        found.append(low + (position - below) * (high - low))
    return found


class _Steps:
    """The absolute differences between neighbouring pixels, across and down: edge steepness and blockiness."""

    def __init__(self, luma: np.ndarray) -> None:
        self.across = cv2.absdiff(luma[:, 1:], luma[:, :-1])
        self.down = cv2.absdiff(luma[1:, :], luma[:-1, :])


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(array, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def _mscn_stats(luma: np.ndarray) -> tuple[float, float, float, float]:
    mu = _blur(luma, 7 / 6)
    sigma = np.sqrt(np.abs(_blur(luma * luma, 7 / 6) - mu * mu))
    mscn = (luma - mu) / (sigma + 1.0 / 255.0)
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(mscn))
    var = std * std
    squared = np.square(mscn - np.float32(mean))
    kurt = cv2.norm(squared, cv2.NORM_L2SQR) / mscn.size / max(var * var, 1e-12)
    horizontal = _mean(mscn[:, :-1] * mscn[:, 1:])
    vertical = _mean(mscn[:-1, :] * mscn[1:, :])
    # Any distribution with a spread has a kurtosis of at least 1; a flat photo has none (0 here).
    return var, math.log(max(kurt, 1e-6)), horizontal, vertical


def _proxies(planes: np.ndarray, lowest: np.ndarray, view: _Luma, measures: Measures, steps: _Steps) -> list[float]:
    luma = view.luma
    dark = cv2.erode(lowest, np.ones((7, 7), np.uint8), borderType=cv2.BORDER_REFLECT)
    p05, p95 = _quantiles(luma[::2, ::2], (0.05, 0.95))
    # Immerkaer (1996): a 3x3 mask that cancels image structure up to second order leaves mostly noise.
    residual = cv2.filter2D(luma, -1, np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32))
    inner = residual[1:-1, 1:-1]
    noise = math.sqrt(math.pi / 2) * cv2.norm(inner, cv2.NORM_L1) / max(inner.size, 1) / 6.0
    tophat = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, _SQUARE_5)
    # Hasler and Suesstrunk (2003): colourfulness from the opponent channels rg and yb.
    red, green, blue = planes
    (rg_mean, rg_std), (yb_mean, yb_std) = (cv2.meanStdDev(c) for c in (red - green, 0.5 * (red + green) - blue))
    colourful = math.hypot(rg_std[0, 0], yb_std[0, 0]) + 0.3 * math.hypot(rg_mean[0, 0], yb_mean[0, 0])
    return [_mean(dark), measures.brightness, p05, p95, noise, math.log(measures.sharpness + 1e-6), _mean(tophat),
            _blockiness(steps), _share(view.local_std < 1.5 / 255), measures.clipped, measures.colour_cast,
            measures.contrast, colourful]


def _steepest(steps: _Steps) -> float:
    return max(_quantiles(steps.down, (0.995,))[0], _quantiles(steps.across, (0.995,))[0])


def _edge_ratio(full: _Steps, half: _Steps) -> float:
    """The steepest edges per pixel at full against half resolution: about 1 for a sharp step, towards 0.5 for an
    edge blurred over a few pixels; unlike the Laplacian it does not grow with the scene's contrast."""
    return _steepest(full) / (_steepest(half) + 1e-4)


def _glare(lowest: np.ndarray, highest: np.ndarray, luma: np.ndarray) -> float:
    """Share of near-white, nearly colourless pixels: specular highlights and blown skies."""
    return _share((luma > 0.9) & (highest - lowest < 0.12))


def _blockiness(steps: _Steps) -> float:
    """Mean jump across every 8th column and row against the mean jump elsewhere (1: no blocks)."""
    dx = cv2.reduce(steps.across, 0, cv2.REDUCE_AVG, dtype=cv2.CV_64F).reshape(-1)
    dy = cv2.reduce(steps.down, 1, cv2.REDUCE_AVG, dtype=cv2.CV_64F).reshape(-1)
    ratios = []
    for d in (dx, dy):
        on = d[7::8]
        off_count = d.size - on.size
        if on.size and off_count:
            on_sum = float(on.sum())
            ratios.append(on_sum / on.size / ((float(d.sum()) - on_sum) / off_count + 1e-4))
    return sum(ratios) / len(ratios) if ratios else 1.0


def _same_size(before: Features, after: Features) -> tuple[np.ndarray, _Luma]:
    """The output's planes and luminance at the input's size."""
    if before.small.shape == after.small.shape:
        return after.planes, after.view
    height, width = before.small.shape[:2]
    small = cv2.resize(after.small, (width, height), interpolation=cv2.INTER_AREA)
    return _planes(small), _Luma(_luma(small))


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
    planes, a = _same_size(before, after)
    b = before.view
    means = a.mean * b.mean
    cov = _blur(a.luma * b.luma, 1.5) - means
    c1, c2 = 0.01**2, 0.03**2
    spread = a.variance + b.variance + c2
    ssim = ((2 * means + c1) * (2 * cov + c2)) / ((a.mean_square + b.mean_square + c1) * spread)
    std_b, std_a = b.local_std, a.local_std
    lost = _share((std_b > 0.02) & (std_a < 0.4 * std_b))
    added = _share((std_a > 0.02) & (std_b < 0.4 * std_a))
    # The fine detail of the change is the change of the fine detail (the blur is linear).
    detail_change = a.detail - b.detail
    norm = math.sqrt(b.detail_energy * b.luma.size * cv2.norm(detail_change, cv2.NORM_L2SQR))
    correlation = _mean(b.detail * detail_change) * b.luma.size / norm if norm > 1e-12 else 0.0
    gain = math.log((a.detail_energy + 1e-8) / (b.detail_energy + 1e-8))
    high, low = b.neighbourhood
    overshoot = _share((a.luma > high) | (a.luma < low))
    change = (planes - before.planes).reshape(3, -1)
    chroma = cv2.norm(_CHROMA @ change, cv2.NORM_L1) / (2 * change.shape[1])
    return [cv2.norm(change, cv2.NORM_L1) / change.size, _mean(ssim), _share(ssim < 0.5), lost, added, correlation,
            gain, overshoot, chroma]


def change_vector(before: Features, after: Features) -> np.ndarray:
    """The model's input: how every feature changed (`change_names`: the log ratio of after to before for
    `RATIO_FEATURES`, after - before for the others), the input's own features (whether brightening or smoothing
    helps depends on where the photo starts), and what the step did (`pair_features`)."""
    change = after.values - before.values
    change[_RATIO] = np.log((after.values[_RATIO] + 1e-3) / (before.values[_RATIO] + 1e-3))
    return np.concatenate([change, before.values, pair_features(before, after)])


def change_names() -> list[str]:
    """The names of `change_vector`'s entries, as the calibration file lists them."""
    return [*(f"log_ratio_{n}" if n in RATIO_FEATURES else f"change_{n}" for n in FEATURE_NAMES),
            *(f"input_{n}" for n in FEATURE_NAMES), *PAIR_FEATURE_NAMES]


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
    return Seen(image, seen, seen.measures)


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
