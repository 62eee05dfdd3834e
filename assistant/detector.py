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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from plugins.tasks import TASKS as CATALOGUE
from plugins.tasks import UNSERVED

__all__ = ["FACE_TASK", "FEATURES", "TASKS", "UNCOVERED", "Face", "FeatureSpec", "Finding", "confidence", "detect",
           "find_faces", "load_calibration", "measure"]

#: Findings that name a degradation no built-in plugin removes (the catalogue's unserved tasks), with how to say
#: so to a user. The planner makes no step for them, says so, and may suggest plugins from the registry's search.
UNCOVERED: dict[str, dict[str, str]] = {
    task: {"seen": CATALOGUE[task].seen, "verb": "removes them", "search": f"remove {CATALOGUE[task].fixes}"}
    for task in UNSERVED
}

#: The face-restoration task: proposed only when a face is found and it looks degraded (see `find_faces`).
FACE_TASK = "face"

#: Statistics are computed on a copy whose long side is at most this; scale-relative degradations (haze, blur
#: of a few percent of the frame, rain streaks) survive it and it keeps detect() fast on large photos.
WORKING_SIZE = 512
#: Faces are searched for on a copy whose long side is at most this (the cascade's cost grows with the area).
FACE_SIZE = 320
#: Faces are resampled to this many pixels across to judge their sharpness.
FACE_PATCH = 128
#: A face is degraded when its sharpness is below this or its noise sigma above FACE_NOISE (see docs).
FACE_SHARPNESS = 0.10
FACE_NOISE = 6.0

CALIBRATION_PATH = Path(__file__).with_name("detector_calibration.json")

cv2.setNumThreads(2)


@dataclass(frozen=True)
class Finding:
    """One proposed task: `confidence` in [0, 1] and the measured statistic that supports it.

    `covered` is False for findings that no restoration task here removes (see `UNCOVERED`).
    """

    task: str
    confidence: float
    evidence: str
    covered: bool = True


@dataclass(frozen=True)
class Face:
    """A frontal face: `box` (left, top, right, bottom) in the photo's pixels, its width, and how it looks."""

    box: tuple[int, int, int, int]
    width: int
    sharpness: float
    noise: float
    degraded: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "degraded", self.sharpness < FACE_SHARPNESS or self.noise > FACE_NOISE)

    def describe(self) -> str:
        return (f"face {self.width} px wide at ({self.box[0]}, {self.box[1]}): sharpness {self.sharpness:.3f} "
                f"(blurred below {FACE_SHARPNESS}), noise {self.noise:.1f}/255 (noisy above {FACE_NOISE:g})")


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


_NOISE = FeatureSpec("noise_sigma", 0.5, "noise sigma", "{:.1f}/255")
_LUMA = FeatureSpec("luma_mean", None, "mean luminance")

#: Model inputs per task; the first is the primary statistic quoted in the evidence. The calibration file
#: records the names it was fitted with and `load_calibration` refuses a file that disagrees. Its keys are the
#: tasks the detector measures (`TASKS`), in the order findings are made and the calibration file is written.
FEATURES: dict[str, tuple[FeatureSpec, ...]] = {
    "dehaze": (
        FeatureSpec("dark_channel_mean", None, "dark channel mean"),
        FeatureSpec("dark_channel_p10", None, "dark channel 10th percentile"),
        FeatureSpec("luma_std", None, "luminance std"),
        FeatureSpec("saturation_mean", None, "mean saturation"),
        FeatureSpec("luma_p10", None, "10th-percentile luminance"),
    ),
    "lowlight": (
        _LUMA,
        FeatureSpec("luma_median", None, "median luminance"),
        FeatureSpec("shadow_fraction", None, "shadow fraction"),
        FeatureSpec("luma_p95", None, "95th-percentile luminance"),
        FeatureSpec("colour_cast", None, "colour cast"),
    ),
    "deblur": (
        FeatureSpec("edge_width_ratio_min", None, "edge steepness at full / half resolution (weakest direction)"),
        FeatureSpec("tile_sharpness", None, "edge steepness at full / half resolution in the sharpest tiles"),
        FeatureSpec("edge_width_ratio_max", None, "edge steepness at full / half resolution (strongest direction)"),
        FeatureSpec("edge_slope_min", 1e-3, "edge steepness (weakest direction)", "{:.3f}"),
        _NOISE,
        _LUMA,
    ),
    "derain": (
        FeatureSpec("stroke_density", 0.5, "parallel near-vertical bright strokes per 10k px", "{:.1f}"),
        FeatureSpec("stroke_alignment", None, "alignment of the bright strokes"),
        FeatureSpec("streak_coherence", None, "near-vertical bright streak coherence"),
        FeatureSpec("streak_line_excess", 0.2, "near-vertical thin bright line excess", "{:.2f}/255"),
        FeatureSpec("drop_count", 1.0, "round soft bright patches (drops)", "{:.0f}"),
        FeatureSpec("blob_density", 0.5, "small bright blobs per 10k px", "{:.1f}"),
    ),
    "desnow": (
        FeatureSpec("blob_coverage", None, "share of the frame holding small bright blobs", "{:.0%}"),
        FeatureSpec("blob_density", 0.5, "small bright blobs per 10k px", "{:.1f}"),
        FeatureSpec("blob_elongated_share", None, "share of elongated bright blobs"),
        FeatureSpec("stroke_density", 0.5, "parallel near-vertical bright strokes per 10k px", "{:.1f}"),
        _NOISE,
    ),
    "demoire": (
        FeatureSpec("chroma_peak", None, "colour spectrum peak (log10 above background)"),
        FeatureSpec("spectral_peak", None, "luminance spectrum peak (log10 above background)"),
        _NOISE,
        _LUMA,
    ),
    "highlight": (
        FeatureSpec("highlight_fraction", 1e-4, "share of pixels in saturated low-chroma blobs", "{:.2%}"),
        # Specular highlights are few; dozens of bright blobs are rain or snow.
        FeatureSpec("highlight_blobs", 1.0, "saturated low-chroma blobs", "{:.0f}"),
        FeatureSpec("blob_coverage", None, "share of the frame holding small bright blobs", "{:.0%}"),
    ),
    "denoise": (
        _NOISE,
        _LUMA,
        FeatureSpec("block_excess", 0.5, "JPEG block-edge excess", "{:.2f}/255"),
    ),
    "jpeg": (
        FeatureSpec("block_excess", 0.5, "JPEG block-edge excess", "{:.2f}/255"),
        FeatureSpec("block_ratio", None, "JPEG block-edge ratio"),
    ),
}

#: Catalogue ids of the tasks the detector measures (face is proposed from found faces, see `FACE_TASK`).
TASKS: tuple[str, ...] = tuple(FEATURES)

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
    "jpeg": "blocking",
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
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.float32) / 255.0)


def _native_crop(rgb: Image.Image) -> np.ndarray:
    """Centre crop at full resolution: downscaling averages noise away, so noise is measured before it."""
    width, height = rgb.size
    side = WORKING_SIZE
    left, top = max(0, (width - side) // 2), max(0, (height - side) // 2)
    crop = rgb.crop((left, top, min(width, left + side), min(height, top + side)))
    return np.ascontiguousarray(np.asarray(crop, dtype=np.float32) / 255.0)


def _scaled(size: float, shape: tuple[int, ...], minimum: int = 3) -> int:
    """An odd window size tuned at WORKING_SIZE, shrunk for smaller images so it stays relative to the frame."""
    scaled = max(minimum, round(size * max(shape[:2]) / WORKING_SIZE))
    return scaled | 1


# ---------------------------------------------------------------------------------------------- statistics


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _channel_min(rgb: np.ndarray) -> np.ndarray:
    return np.minimum(np.minimum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _channel_max(rgb: np.ndarray) -> np.ndarray:
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _box(size: int) -> np.ndarray:
    return np.ones((size, size), dtype=np.uint8)


def _haze_and_tone(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # Dark channel prior (He et al. 2009): in haze-free patches some channel is near zero; airlight lifts it.
    patch = _scaled(15, rgb.shape)
    low, high = _channel_min(rgb), _channel_max(rgb)
    dark = cv2.erode(low, _box(patch), borderType=cv2.BORDER_REPLICATE)
    saturation = (high - low) / np.maximum(high, 1e-3)
    # Percentiles of a 1-in-4 subsample: the same to 0.01 and four times cheaper.
    p10, p50, p95 = np.percentile(luma[::2, ::2], (10, 50, 95))
    means = np.array(cv2.mean(rgb)[:3])
    return {
        "dark_channel_mean": float(dark.mean()),
        # Haze lifts the darkest patches of the whole frame; glare or one bright region leaves most of them dark.
        "dark_channel_p10": float(np.percentile(dark[::2, ::2], 10)),
        "luma_mean": float(luma.mean()),
        "luma_median": float(p50),
        "luma_p10": float(p10),
        "luma_std": float(luma.std()),
        "luma_p95": float(p95),
        # 0.1 is about the level below which an 8-bit sRGB shadow holds no readable detail.
        "shadow_fraction": float((luma < 0.1).mean()),
        "saturation_mean": float(saturation.mean()),
        # Spread of the channel means relative to their mean: a colour cast (sodium light, dim indoor light).
        "colour_cast": float((means.max() - means.min()) / max(float(means.mean()), 1e-3)),
    }


def _noise_sigma(native: np.ndarray) -> float:
    """Robust noise sigma in 8-bit levels: MAD of a Laplacian-like residual on the flattest half of the image.

    The 3x3 kernel (Immerkaer 1996) cancels linear ramps; edges still leak into it, so only pixels with a
    below-median gradient count and the median absolute deviation (Donoho) ignores the rest.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    if min(native.shape[:2]) < 3:
        return 0.0
    sigmas = []
    for channel in np.moveaxis(native, 2, 0):
        channel = np.ascontiguousarray(channel)
        residual = cv2.filter2D(channel, -1, kernel, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
        gradient = np.abs(cv2.Sobel(channel, -1, 1, 0)) + np.abs(cv2.Sobel(channel, -1, 0, 1))
        gradient = gradient[1:-1, 1:-1]
        flat = gradient <= np.median(gradient)
        values = np.abs(residual[flat]) if flat.any() else np.abs(residual).ravel()
        # 6 = L2 norm of the kernel; 1.4826 turns a MAD into a Gaussian sigma.
        sigmas.append(1.4826 * float(np.median(values)) / 6.0)
    return float(np.mean(sigmas)) * 255.0


def _sharpness(luma: np.ndarray) -> dict[str, float]:
    # A light pre-blur keeps pixel noise from posing as sharp edges.
    smooth = cv2.GaussianBlur(luma, (0, 0), 0.7)
    gy = cv2.Sobel(smooth, -1, 0, 1) / 8.0
    gx = cv2.Sobel(smooth, -1, 1, 0) / 8.0
    low, high = np.percentile(luma[::2, ::2], (1, 99))
    contrast = max(float(high - low), 0.05)
    half = cv2.resize(luma, (max(1, luma.shape[1] // 2), max(1, luma.shape[0] // 2)), interpolation=cv2.INTER_AREA)
    half = cv2.GaussianBlur(half, (0, 0), 0.7)
    tile_sharpness = _tile_sharpness(gx, gy, half)
    # Motion blur smears edges along one direction only, so look at the steepest edges per direction and keep
    # the weakest direction: a sharp photo is steep in all of them. A subsample keeps the percentiles cheap.
    gx, gy = gx[::2, ::2].ravel(), gy[::2, ::2].ravel()
    slopes = []
    for angle in np.linspace(0.0, np.pi, 8, endpoint=False):
        directional = np.abs(np.cos(angle) * gx + np.sin(angle) * gy)
        slopes.append(float(np.percentile(directional, 99.5)) / contrast)
    # Edge width without a contrast scale: the steepest edges at full and at half resolution. A sharp step is
    # as steep per pixel at both (ratio about 1); an edge blurred over w pixels is twice as steep per pixel at
    # half resolution (ratio towards 0.5). The weakest direction catches motion blur.
    hy, hx = (cv2.Sobel(half, -1, 0, 1) / 8.0).ravel(), (cv2.Sobel(half, -1, 1, 0) / 8.0).ravel()
    ratios = []
    for angle, fine in zip(np.linspace(0.0, np.pi, 8, endpoint=False), slopes, strict=True):
        coarse = float(np.percentile(np.abs(np.cos(angle) * hx + np.sin(angle) * hy), 99.5)) / contrast
        ratios.append(fine / max(coarse, 1e-4))
    return {
        "tile_sharpness": tile_sharpness,
        "edge_slope_min": min(slopes),
        "edge_slope_max": max(slopes),
        "edge_width_ratio_min": min(ratios),
        "edge_width_ratio_max": max(ratios),
        "laplacian_var": float(cv2.Laplacian(luma, -1).var()),
    }


def _tile_sharpness(gx: np.ndarray, gy: np.ndarray, half: np.ndarray, tile: int = 16) -> float:
    """Edge width per tile: the 90th percentile, over tiles with some contrast, of each tile's steepest edge at
    full resolution over the same at half resolution (weakest of 4 directions).

    `gx`, `gy` are the full-resolution derivatives, `half` the pre-blurred half-resolution luminance (one tile
    is `tile` px there and twice that at full resolution). Camera shake blurs every part of the frame, so even the
    sharpest tiles are soft; a sharp photo whose strongest edges happen to be soft (a cast shadow, a plain wall)
    still has sharp texture somewhere, and a shallow depth of field keeps its subject sharp.
    """
    hy, hx = cv2.Sobel(half, -1, 0, 1) / 8.0, cv2.Sobel(half, -1, 1, 0) / 8.0
    rows = min(gx.shape[0] // 2, hx.shape[0]) // tile
    cols = min(gx.shape[1] // 2, hx.shape[1]) // tile
    if rows * cols < 4:
        return 1.0
    ratios, contrast = [], []
    big = 2 * tile
    for angle in np.linspace(0.0, np.pi, 4, endpoint=False):
        fine = np.abs(np.cos(angle) * gx + np.sin(angle) * gy)[: rows * big, : cols * big]
        coarse = np.abs(np.cos(angle) * hx + np.sin(angle) * hy)[: rows * tile, : cols * tile]
        fine_max = fine.reshape(rows, big, cols, big).max(axis=(1, 3))
        coarse_max = coarse.reshape(rows, tile, cols, tile).max(axis=(1, 3))
        ratios.append(fine_max / np.maximum(coarse_max, 1e-4))
        contrast.append(coarse_max)
    ratio, steep = np.min(ratios, axis=0), np.min(contrast, axis=0)
    textured = steep > 0.02  # a step of about 5/255 per pixel at half resolution
    if textured.sum() < 4:
        return 1.0
    return float(np.percentile(ratio[textured], 90))


def _blockiness(native_luma: np.ndarray) -> dict[str, float]:
    """JPEG's 8x8 block grid: jumps between neighbouring pixels are larger on one column (row) phase in 8.

    Mean absolute difference of neighbours per phase modulo 8; the strongest phase against the median of the
    others, both as an excess in 8-bit levels and as a ratio, in the weaker of the two directions (a real
    grid shows in both, a striped texture in one). Needs the photo at its own resolution: any rescaling
    smears the grid.
    """
    values = []
    for axis in (1, 0):
        diff = np.abs(np.diff(native_luma, axis=axis))
        profile = diff.mean(axis=1 - axis)
        usable = len(profile) // 8 * 8
        if usable < 16:
            return {"block_excess": 0.0, "block_ratio": 1.0}
        phases = profile[:usable].reshape(-1, 8).mean(axis=0) * 255.0
        strongest = int(np.argmax(phases))
        rest = float(np.median(np.delete(phases, strongest)))
        values.append((float(phases[strongest]) - rest, float(phases[strongest]) / (rest + 0.25)))
    return {"block_excess": min(v[0] for v in values), "block_ratio": min(v[1] for v in values)}


def _components(mask: np.ndarray) -> np.ndarray:
    """Connected components as rows (area, width, height, centre y, centre x); the background is dropped."""
    count, _, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros((0, 5))
    stats, centres = stats[1:], centres[1:]
    return np.column_stack([stats[:, cv2.CC_STAT_AREA], stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT],
                            centres[:, 1], centres[:, 0]]).astype(np.float64)


def _aligned_strokes(mask: np.ndarray) -> tuple[float, float]:
    """(number of elongated pieces of `mask` aligned with their common orientation, that orientation's
    coherence in [0, 1]); both 0 unless the common orientation is within about 35 degrees of vertical.

    Each piece's orientation and elongation come from its second moments (sums over its pixels by label).
    """
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 4:
        return 0.0, 0.0
    ys, xs = np.nonzero(labels)
    owner = labels[ys, xs]
    ys, xs = ys.astype(np.float64), xs.astype(np.float64)
    area = np.bincount(owner, minlength=count).astype(np.float64)
    size = np.maximum(area, 1)
    mean_x, mean_y = np.bincount(owner, xs, count) / size, np.bincount(owner, ys, count) / size
    vxx = np.bincount(owner, xs * xs, count) / size - mean_x**2
    vyy = np.bincount(owner, ys * ys, count) / size - mean_y**2
    vxy = np.bincount(owner, xs * ys, count) / size - mean_x * mean_y
    half_trace = (vxx + vyy) / 2
    spread = np.sqrt(np.maximum(half_trace**2 - (vxx * vyy - vxy**2), 0))
    # A one-pixel-wide line has variance 1/12 across it; the floor keeps thin pieces from dividing by zero.
    elongation = np.sqrt((half_trace + spread) / np.maximum(half_trace - spread, 1 / 12))
    theta = 0.5 * np.arctan2(2 * vxy, vyy - vxx)  # orientation of the long axis, 0 = vertical
    pieces = (area >= 6) & (elongation > 3)
    pieces[0] = False
    if pieces.sum() < 3:
        return 0.0, 0.0
    resultant = np.exp(2j * theta[pieces]).mean()
    dominant = 0.5 * float(np.angle(resultant))
    if abs(dominant) > 0.6:
        return 0.0, 0.0
    aligned = pieces & (np.abs(np.angle(np.exp(2j * (theta - dominant)))) < 0.52)
    return float(aligned.sum()), float(abs(resultant))


@lru_cache(maxsize=64)
def _line(length: int, angle: float) -> np.ndarray:
    """A one-pixel line structuring element `length` px long, `angle` radians from vertical."""
    kernel = np.zeros((length, length), dtype=np.uint8)
    centre = (length - 1) / 2
    for t in np.linspace(-centre, centre, 2 * length):
        kernel[round(centre + t * math.cos(angle)), round(centre + t * math.sin(angle))] = 1
    return kernel


def _grid_coverage(rows: np.ndarray, shape: tuple[int, ...]) -> float:
    """Share of an 8x8 grid's cells holding at least one of the components: snow and rain cover the frame."""
    if len(rows) == 0:
        return 0.0
    cells = {(int(y * 8 / shape[0]), int(x * 8 / shape[1])) for y, x in rows[:, 3:5]}
    return len(cells) / 64


def _bright_details(rgb: np.ndarray, luma: np.ndarray, noise_sigma: float) -> dict[str, float]:
    """Rain streaks, raindrops and snow flakes: structures brighter than their surroundings."""
    scale = max(luma.shape) / WORKING_SIZE
    chroma = _channel_max(rgb) - _channel_min(rgb)
    # White top-hats keep bright things narrower than the window and drop edges and smooth shading; two
    # windows catch thin sharp streaks and thick, blurred ones (heavy rain close to the lens).
    thin = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, _box(_scaled(5, luma.shape)))
    thick = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, _box(_scaled(13, luma.shape)))
    energy = float(thick.mean())

    # Global structure tensor of the streak map: rain streaks share one orientation, texture does not.
    best_coherence, best_angle = 0.0, 0.0
    for streaks in (thin, thick):
        gy, gx = cv2.Sobel(streaks, -1, 0, 1), cv2.Sobel(streaks, -1, 1, 0)
        jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
        trace = jxx + jyy
        coherence = math.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / trace if trace > 1e-12 else 0.0
        # Dominant gradient direction; streaks run perpendicular to it. 0 rad = vertical streaks.
        angle = 0.5 * math.atan2(2 * jxy, jxx - jyy)
        # Rain falls within about 30 degrees of vertical; fade the score out by 50 degrees so buildings'
        # horizontal lines or striped fabric at other angles do not read as rain.
        vertical = min(1.0, max(0.0, (50.0 - abs(math.degrees(angle))) / 20.0))
        if coherence * vertical >= best_coherence:
            best_coherence, best_angle = coherence * vertical, angle

    # Rain as straight lines: what of the thin top-hat survives an opening with a line a few percent of the frame
    # long at a near-vertical angle, minus what survives the same line turned 90 degrees (texture and noise
    # survive both about equally; faint thin streaks over busy texture survive only along the rain).
    line_excess = 0.0
    length = _scaled(21, luma.shape, minimum=5)
    for degrees in range(-36, 37, 12):
        along = cv2.morphologyEx(thin, cv2.MORPH_OPEN, _line(length, math.radians(degrees)))
        across = cv2.morphologyEx(thin, cv2.MORPH_OPEN, _line(length, math.radians(degrees + 90)))
        line_excess = max(line_excess, float(along.mean() - across.mean()) * 255.0)

    # Rain as separate strokes: threshold each streak map, and among its pieces count the elongated ones that
    # share the dominant orientation near vertical. Rain gives dozens of parallel short strokes; a building
    # gives a few long lines, texture pieces point every way, and motion blur leaves no separate strokes.
    strokes, alignment = 0.0, 0.0
    for streaks in (thin, thick):
        level = max(0.03, float(np.percentile(streaks[::2, ::2], 90)), 2.5 * noise_sigma / 255.0)
        count, aligned = _aligned_strokes(streaks > level)
        strokes = max(strokes, count * 1e4 / luma.size)
        alignment = max(alignment, aligned)

    # Snow flakes: compact bright blobs, standing clearly above the noise, near-white, of many sizes.
    level = max(0.08, 3.0 * noise_sigma / 255.0)
    whitish = (luma > 0.45) & (chroma < 0.25)
    flakes = _components(((thin > level) | (thick > level + 0.04)) & whitish)
    density = coverage = elongated_share = size_spread = 0.0
    if len(flakes):
        area, width, height = flakes[:, 0], flakes[:, 1], flakes[:, 2]
        aspect = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1)
        small = area <= 250 * scale**2
        round_ = small & (aspect <= 2.5)
        density = float(round_.sum()) * 1e4 / luma.size
        coverage = _grid_coverage(flakes[round_], luma.shape)
        elongated_share = float((small & (aspect > 3)).sum() / max(1, small.sum()))
        if round_.sum() >= 5:
            size_spread = float(np.std(np.log(area[round_])))

    # Raindrops on the lens: large soft round patches brighter than around them (out-of-focus drops and their
    # bokeh), a few percent of the frame across, anywhere in it.
    big = cv2.morphologyEx(luma, cv2.MORPH_TOPHAT, _box(_scaled(41, luma.shape)))
    drops = _components(big > 0.08)
    drop_count = 0.0
    if len(drops):
        area, width, height = drops[:, 0], drops[:, 1], drops[:, 2]
        aspect = np.maximum(width, height) / np.maximum(np.minimum(width, height), 1)
        fill = area / np.maximum(width * height, 1)
        keep = (area >= 40 * scale**2) & (area <= 1500 * scale**2) & (aspect <= 1.8) & (fill >= 0.5)
        drop_count = float(keep.sum())
    return {
        "streak_energy": energy,
        "streak_coherence": best_coherence,
        "streak_tilt": abs(math.degrees(best_angle)),
        "streak_line_excess": line_excess,
        "stroke_density": strokes,
        "stroke_alignment": alignment,
        "blob_density": density,
        "blob_coverage": coverage,
        "blob_elongated_share": elongated_share,
        "blob_size_spread": size_spread,
        "drop_count": drop_count,
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
    log_power = np.log10(power + 1e-12).astype(np.float32)
    background = cv2.blur(log_power, (9, 9), borderType=cv2.BORDER_REFLECT)
    fy = (np.arange(height) - height // 2)[:, None] / height
    fx = (np.arange(width) - width // 2)[None, :] / width
    radius = np.hypot(fy, fx)
    # Skip the lowest frequencies (steep 1/f slope), the axes (JPEG blocks, straight horizons and walls put
    # energy there even with the window) and JPEG's 8 px grid harmonics.
    keep = (radius > 0.04) & (np.abs(fx) > 2.0 / width) & (np.abs(fy) > 2.0 / height)
    if not keep.any():
        return 0.0
    return float((log_power - background)[keep].max())


def _moire(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # A central crop keeps the three FFTs cheap; moire covers large parts of the frame when it is there.
    height, width = luma.shape
    side = 256
    top, left = max(0, (height - side) // 2), max(0, (width - side) // 2)
    rgb, luma = rgb[top : top + side, left : left + side], luma[top : top + side, left : left + side]
    # Colour moire lives in the chroma channels, where natural photos have almost no fine periodic structure.
    cb = rgb[..., 2] - luma
    cr = rgb[..., 0] - luma
    return {
        "spectral_peak": _spectral_peak(luma),
        "chroma_peak": max(_spectral_peak(cb), _spectral_peak(cr)),
    }


def _highlights(rgb: np.ndarray, luma: np.ndarray) -> dict[str, float]:
    # Specular reflections keep the light source's colour (near white) and clip the sensor.
    chroma = _channel_max(rgb) - _channel_min(rgb)
    mask = (luma > 0.9) & (chroma < 0.12)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return {"highlight_fraction": 0.0, "highlight_blobs": 0.0}
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    # Compact blobs brighter than their neighbourhood; big bright regions (overcast sky, a white wall) are
    # exposure, not specular highlights. The neighbourhood is wide (a fifth of the frame) so that even a large
    # highlight does not fill it.
    size = _scaled(101, luma.shape)
    surround = cv2.blur(luma, (size, size), borderType=cv2.BORDER_REFLECT)
    lift_sum = np.bincount(labels.ravel(), (luma - surround).ravel(), minlength=count)[1:]
    lift = lift_sum / np.maximum(areas, 1)
    min_area = 6 * (max(luma.shape) / WORKING_SIZE) ** 2
    # A specular highlight fades out through a bright halo; a white object or painted-over region stops at a
    # hard edge. The ring of pixels just outside each blob must stand above the surround too.
    ring_width = _scaled(5, luma.shape)
    grown = cv2.dilate(labels.astype(np.float32), _box(ring_width))
    ring = (labels == 0) & (grown > 0)
    ring_owner = grown[ring].astype(np.int64)
    ring_lift = np.bincount(ring_owner, (luma - surround)[ring], minlength=count)[1:] / np.maximum(
        np.bincount(ring_owner, minlength=count)[1:], 1)
    keep = (areas >= min_area) & (areas <= 0.05 * luma.size) & (lift > 0.15) & (ring_lift > 0.08)
    return {
        "highlight_fraction": float(areas[keep].sum() / luma.size),
        "highlight_blobs": float(keep.sum()),
    }


# ------------------------------------------------------------------------------------------------- faces


@lru_cache(maxsize=1)
def _face_cascade() -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade (Viola-Jones), shipped inside the opencv-python-headless wheel."""
    folder = cv2.data.haarcascades  # type: ignore[attr-defined]  # cv2's stubs leave out its data package
    path = Path(folder) / "haarcascade_frontalface_default.xml"
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise RuntimeError(f"cannot load OpenCV's face cascade from {path}; reinstall opencv-python-headless<5")
    return cascade


def find_faces(rgb: Image.Image) -> list[Face]:
    """Frontal faces in `rgb` (an RGB image), largest first, with how degraded each looks.

    The cascade runs on a copy with its long side at most FACE_SIZE (faces smaller than about 6 % of that side
    are not looked for); each face's sharpness and noise are measured on the photo at its own resolution.
    """
    small = rgb.convert("L")
    small.thumbnail((FACE_SIZE, FACE_SIZE), Image.Resampling.BILINEAR)
    grey = cv2.equalizeHist(np.asarray(small, dtype=np.uint8))
    if min(grey.shape) < 24:
        return []
    boxes = _face_cascade().detectMultiScale(grey, scaleFactor=1.2, minNeighbors=5, minSize=(20, 20))
    factor = rgb.width / small.width
    faces = []
    for x, y, w, h in sorted((tuple(map(int, b)) for b in boxes), key=lambda b: -b[2] * b[3])[:4]:
        box = (round(x * factor), round(y * factor), round((x + w) * factor), round((y + h) * factor))
        faces.append(_face_quality(rgb, box))
    return faces


def _face_quality(rgb: Image.Image, box: tuple[int, int, int, int]) -> Face:
    """Sharpness and noise of one face: the centre of the box (eyes, nose, mouth), at its own resolution.

    `sharpness` is the 99th-percentile gradient of the face resampled to FACE_PATCH px, divided by its 1-99 %
    luminance range: a sharp face (crisp eyelids, nostrils, lips) reaches well above a blurred or upscaled one.
    A face fewer than FACE_PATCH px wide is upscaled, so low resolution reads as blur, which is what it looks
    like. `noise` is the noise sigma (8-bit levels) inside the face.
    """
    left, top, right, bottom = box
    inset_x, inset_y = (right - left) // 8, (bottom - top) // 8
    crop = rgb.crop((left + inset_x, top + inset_y, right - inset_x, bottom - inset_y))
    native = np.asarray(crop, dtype=np.float32) / 255.0
    noise = _noise_sigma(native) if min(native.shape[:2]) >= 8 else 0.0
    patch = np.asarray(crop.convert("L").resize((FACE_PATCH, FACE_PATCH), Image.Resampling.BICUBIC),
                       dtype=np.float32) / 255.0
    smooth = cv2.GaussianBlur(patch, (0, 0), 0.7)
    magnitude = np.hypot(cv2.Sobel(smooth, -1, 1, 0), cv2.Sobel(smooth, -1, 0, 1)) / 8.0
    contrast = max(float(np.percentile(patch, 99) - np.percentile(patch, 1)), 0.05)
    sharpness = float(np.percentile(magnitude, 99)) / contrast
    return Face(box=box, width=right - left, sharpness=sharpness, noise=noise)


# --------------------------------------------------------------------------------------------- measuring


def measure(image: Image.Image) -> dict[str, float]:
    """The raw statistics `detect` works from, by name; all finite (see docs/detector.md for their meaning).

    Intensities are in [0, 1] except `noise_sigma` and `block_excess` (8-bit levels); `blob_density` is per
    10,000 pixels.
    """
    return _measure(_as_rgb(image))


def _measure(rgb_image: Image.Image) -> dict[str, float]:
    rgb = _working_copy(rgb_image)
    luma = _luma(rgb)
    native = _native_crop(rgb_image)
    stats: dict[str, float] = {}
    stats.update(_haze_and_tone(rgb, luma))
    stats["noise_sigma"] = _noise_sigma(native)
    stats.update(_blockiness(_luma(native)))
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
        if model is None or model.get("features") != expected or not model.get("models"):
            raise ValueError(
                f"{path}: task {task!r} was fitted on {None if model is None else model.get('features')}, "
                f"detector uses {expected}; rerun `python benchmarks/detector_accuracy.py --write`"
            )
        for mode in model["models"]:
            for key in ("mean", "scale", "weights"):
                if len(mode.get(key, ())) != len(expected):
                    raise ValueError(f"{path}: task {task!r} has {len(mode.get(key, ()))} {key}, expected "
                                     f"{len(expected)}; rerun `python benchmarks/detector_accuracy.py --write`")
    return calibration


def _logit(model: dict[str, Any], inputs: list[float]) -> float:
    z = float(model["bias"])
    for x, mean, scale, weight in zip(inputs, model["mean"], model["scale"], model["weights"], strict=True):
        z += weight * (x - mean) / scale
    return z


def _best_model(task: str, stats: dict[str, float], calibration: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The task's most confident logistic model and its logit. A task has one model per kind of degradation it
    fixes that looks different (rain streaks and raindrops for derain): the task is needed if any kind is seen."""
    inputs = [spec.transform(stats[spec.name]) for spec in FEATURES[task]]
    scored = [(model, _logit(model, inputs)) for model in calibration["tasks"][task]["models"]]
    return max(scored, key=lambda pair: pair[1])


def confidence(task: str, stats: dict[str, float], calibration: dict[str, Any] | None = None) -> float:
    """Calibrated probability that `task` is needed, from statistics returned by `measure`."""
    _, z = _best_model(task, stats, calibration or load_calibration())
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


def detect(image: Image.Image, threshold: float = 0.5, faces: bool = True) -> list[Finding]:
    """Tasks whose calibrated confidence is at least `threshold`, most confident first.

    Args:
        image (`PIL.Image.Image`): the photo, any mode and size (alpha is ignored, 16-bit is rescaled).
        threshold (`float`, *optional*, defaults to 0.5): smallest confidence to report, in [0, 1].
        faces (`bool`, *optional*, defaults to True): also look for faces and propose `face` for a degraded one.

    A `jpeg` finding has `covered=False`: no restoration task here removes JPEG blocks (see `UNCOVERED`).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}; 0.5 reports even-odds findings")
    calibration = load_calibration()
    rgb = _as_rgb(image)
    stats = _measure(rgb)
    findings = []
    for task in TASKS:
        score = confidence(task, stats, calibration)
        if score >= threshold:
            model, _ = _best_model(task, stats, calibration)
            evidence = _evidence(task, stats, model)
            if len(calibration["tasks"][task]["models"]) > 1:  # say which kind (rain streaks or raindrops)
                evidence = f"{model['kind']}: {evidence}"
            findings.append(Finding(task, round(score, 4), evidence, covered=task not in UNCOVERED))
    if faces:
        findings += _face_findings(find_faces(rgb), threshold)
    return sorted(findings, key=lambda finding: finding.confidence, reverse=True)


def _face_findings(found: list[Face], threshold: float) -> list[Finding]:
    """A `face` finding for the most degraded face found, if it is degraded; sharp faces are left alone.

    The confidence is a fixed logistic on how far the face's sharpness (or noise) is past its limit; it is not
    fitted (there are too few faces among the calibration photos), so read it as a ranking, not a probability.
    """
    degraded = [face for face in found if face.degraded]
    if not degraded:
        return []
    worst = max(degraded, key=_face_margin)
    score = 1.0 / (1.0 + math.exp(-(0.5 + 8.0 * _face_margin(worst))))
    if score < threshold:
        return []
    others = f" ({len(found) - 1} more found)" if len(found) > 1 else ""
    return [Finding(FACE_TASK, round(score, 4), f"degraded {worst.describe()}{others}")]


def _face_margin(face: Face) -> float:
    """How far past its limit the face is (log ratio; positive when degraded)."""
    return max(math.log(FACE_SHARPNESS / max(face.sharpness, 1e-3)), math.log(max(face.noise, 1e-3) / FACE_NOISE))
