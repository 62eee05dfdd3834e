"""A cheap per-step quality check: did a plan step make the photo measurably worse?

After each plugin runs, the executor can `measure` the photo before and after it and ask `judge` whether the
step should be kept. The measures are no-reference (there is no clean photo to compare against) and global:

- sharpness: variance of a 3x3 Laplacian of the luminance (Pech-Pacheco et al., ICPR 2000), i.e. how much
  fine detail there is;
- contrast: RMS contrast, the standard deviation of the luminance;
- brightness: mean luminance (reported, never judged: most steps are meant to change it);
- colour cast: how far the mean chroma (BT.601 Cb, Cr) lies from neutral grey;
- clipped: the fraction of pixels that are crushed to black or blown to white.

Limits: measures like these cannot tell a good restoration from a bad one in general. Removing rain or noise
lowers "sharpness" because the Laplacian cannot tell streaks and grain from detail; a faithful dehaze and an
over-saturated one both raise contrast. The Laplacian variance also scales with the square of the contrast, so a
flattened photo reads as a blurred one too, and it is very sensitive: a Gaussian blur of radius 0.5 px already
costs about half of it. The cast is the mean chroma, so a step that gives back colour (dehaze, low-light
enhancement, more saturation) raises it on any scene with a dominant colour without tinting anything; those tasks
are not judged on it, and a tint they add goes unnoticed. What the measures do catch is a gross failure: a result
that came out blurred, washed out, tinted or blown out. Every task is therefore judged only on the measures it is
not expected to change (`EXPECTED_CHANGES`): a false alarm makes the executor drop or reorder a step the user
asked for, which costs more than letting a mediocre step through.

All measures are taken on one copy whose long side is at most `MEASURE_SIZE` px, so a 24-megapixel photo costs
the same as a small one and the numbers for the same scene do not depend on its resolution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import PIL.Image

__all__ = ["EXPECTED_CHANGES", "JUDGED", "MEASURE_SIZE", "Measures", "Thresholds", "Verdict", "judge", "measure",
           "measure_array"]

MEASURE_SIZE = 512

# BT.601 (the luma/chroma of JPEG): the cast measure is "how far from grey", for which these weights are the
# usual convention.
_LUMA = np.array([0.299, 0.587, 0.114])
_CB = np.array([-0.168736, -0.331264, 0.5])
_CR = np.array([0.5, -0.418688, -0.081312])

# Luminance levels that count as crushed or blown: within ~5 of 255 of either end no detail is left to see.
_DARK, _BRIGHT = 0.02, 0.98

# Below this a relative drop is meaningless: a flat image's Laplacian variance and standard deviation are 0 up to
# floating-point noise, and a "fall" from noise to noise is not a loss of detail.
_NO_STRUCTURE = 1e-9


@dataclass(frozen=True)
class Measures:
    """No-reference measures of one photo, all on luminance or chroma in [0, 1] (see the module docstring)."""

    sharpness: float  # variance of the 3x3 Laplacian of the luminance, on the <= MEASURE_SIZE px copy
    contrast: float  # standard deviation of the luminance
    brightness: float  # mean luminance
    colour_cast: float  # sqrt(mean(Cb)^2 + mean(Cr)^2), Cb and Cr in [-0.5, 0.5]
    clipped: float  # fraction of pixels with luminance < 0.02 or > 0.98

    def to_json(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in asdict(self).items()}


# The measures `judge` looks at; brightness is left out because raising or lowering it is what many steps are for.
JUDGED: frozenset[str] = frozenset({"sharpness", "contrast", "colour_cast", "clipped"})


def measure(image: PIL.Image.Image) -> Measures:
    """Measure `image` (any mode; converted to RGB, alpha dropped) on a copy at most MEASURE_SIZE px on its long
    side."""
    if image.width < 1 or image.height < 1:
        raise ValueError(f"cannot measure an empty image ({image.width}x{image.height})")
    rgb = image.convert("RGB")
    scale = MEASURE_SIZE / max(rgb.size)
    if scale < 1:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        # reducing_gap: a box reduce first, then Lanczos over the last factor of 3; near-identical to a full
        # Lanczos and much faster on big photos.
        rgb = rgb.resize(size, PIL.Image.Resampling.LANCZOS, reducing_gap=3.0)
    return measure_array(np.asarray(rgb, dtype=np.float64) / 255.0)


def measure_array(array: np.ndarray, luma: np.ndarray | None = None) -> Measures:
    """`measure` of an RGB array in [0, 1] already at the size it should be measured at (the judge's copy);
    `luma`, its luminance, when the caller has it already."""
    luma = array @ _LUMA if luma is None else luma
    # The mean chroma is the chroma of the mean colour: three channel means instead of two passes over the photo.
    # OpenCV's reductions sum in double precision, also for float32 arrays.
    rgb_mean = np.array(cv2.mean(np.ascontiguousarray(array))[:3])
    mean, std = (float(v[0, 0]) for v in cv2.meanStdDev(luma))
    in_range = cv2.countNonZero(cv2.inRange(luma, _DARK, _BRIGHT))  # inclusive, so the ends are what is clipped
    return Measures(
        sharpness=_laplacian_variance(luma),
        contrast=std,
        brightness=mean,
        colour_cast=math.hypot(float(rgb_mean @ _CB), float(rgb_mean @ _CR)),
        clipped=1.0 - in_range / luma.size,
    )


def _laplacian_variance(luma: np.ndarray) -> float:
    if min(luma.shape) < 3:
        return 0.0
    centre = luma[1:-1, 1:-1]
    # Pairs summed first: on a flat image each pair is exactly 2c and the total exactly 4c, so the response is
    # exactly 0 rather than rounding noise.
    response = (luma[:-2, 1:-1] + luma[2:, 1:-1]) + (luma[1:-1, :-2] + luma[1:-1, 2:]) - 4.0 * centre
    return float(cv2.meanStdDev(response)[1][0, 0]) ** 2


@dataclass(frozen=True)
class Thresholds:
    """How much worse a judged measure may get before a step counts as worse.

    The defaults sit between what a gross failure does and what a sound edit does, measured on skimage photos
    (tests/test_quality.py): a Gaussian blur of radius 3 costs 99% of the sharpness and a 70% blend toward grey
    70% of the contrast, while a 2x Lanczos enlargement of a 512 px photo, measured back at 512 px, costs 25% of
    the sharpness and nothing of the contrast. A strong tint (R, G, B x 1.0, 0.8, 0.5) raises the cast by 0.05 to
    0.08, a sharpen by nothing. A x3 blow-out clips 23 to 65 points more of the photo, a sharpen about 1 point.

    The sharpness drop is the strictest of the four for so sensitive a measure: scaling a photo to 0.75 and back
    costs 64 to 73% of it. Outputs that pass through a lossy stage (a diffusion model's VAE) should be checked
    against it before the check is turned on by default.
    """

    sharpness_drop: float = 0.4  # relative: the after value may be at most 40% below the before value
    contrast_drop: float = 0.4  # relative
    cast_rise: float = 0.04  # absolute, in Cb/Cr units (a neutral grey is 0, pure blue ~0.5)
    clipped_rise: float = 0.10  # absolute: 10 percentage points more of the photo crushed or blown

    def __post_init__(self) -> None:
        for name in ("sharpness_drop", "contrast_drop"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:  # also rejects NaN
                raise ValueError(f"{name} is a relative drop in [0, 1], got {value!r}")
        for name in ("cast_rise", "clipped_rise"):
            value = getattr(self, name)
            if not value >= 0.0:  # `not >=` also rejects NaN
                raise ValueError(f"{name} is an absolute rise >= 0, got {value!r}")


# Which judged measures a task is expected to change, so that a change there is not held against it: one entry per
# catalogue task a built-in plugin serves (plugins/tasks.py). A task not listed here (a community plugin's) is
# judged on every measure in JUDGED.
EXPECTED_CHANGES: dict[str, frozenset[str]] = {
    # Rain streaks, snowflakes and moire are high-frequency patterns the Laplacian counts as detail.
    "derain": frozenset({"sharpness"}),
    "desnow": frozenset({"sharpness"}),
    "demoire": frozenset({"sharpness"}),
    # Grain is the largest part of a noisy photo's Laplacian variance; removing it is the point.
    "denoise": frozenset({"sharpness"}),
    # Restoring a face also removes its noise and compression blocks, which the Laplacian counts as detail.
    "face": frozenset({"sharpness"}),
    # Nothing: deblurring must not lower sharpness, and a result that is tinted or blown is a failure.
    "deblur": frozenset(),
    # Haze and darkness wash colour out, so restoring it moves the mean chroma away from grey: the classic dehaze
    # raises the cast by 0.05 to 0.11 on skimage photos (landing on the clean photo's own cast), as much as a strong
    # tint does, so no cast threshold could tell the two apart.
    "dehaze": frozenset({"colour_cast"}),
    # Dimming glare narrows the tonal range, and dividing out the glint can take dark surfaces to black; small
    # glints are sharp bright spots, among the strongest Laplacian responses in the photo.
    "highlight": frozenset({"sharpness", "contrast", "clipped"}),
    # The same colour restoration (LIME raises the cast by 0.08 to 0.19), and lifting the shadows may push lamps
    # and windows that were already near white to white.
    "lowlight": frozenset({"colour_cast", "clipped"}),
    # The user's own tonal edits: flattening or darkening lowers contrast, and the Laplacian variance with its
    # square; stretching or brightening clips the ends.
    "contrast": frozenset({"sharpness", "contrast", "clipped"}),
    "exposure": frozenset({"sharpness", "contrast", "clipped"}),
    # More saturation moves the mean chroma away from grey whenever the scene has a dominant colour.
    "saturation": frozenset({"colour_cast"}),
    # Nothing: white balance exists to lower the cast, so a rise is exactly its failure.
    "white-balance": frozenset(),
    # Enlarging a photo smaller than MEASURE_SIZE spreads its detail over more pixels.
    "resize": frozenset({"sharpness"}),
    # A free angle resamples (slightly softer) and adds black corners (more clipped, different contrast).
    "rotate": frozenset({"sharpness", "contrast", "clipped"}),
    # A crop is a different picture: its statistics say nothing about whether the crop was good.
    "crop": JUDGED,
}


@dataclass(frozen=True)
class Verdict:
    """Whether a step made the photo worse, and why (one human-readable reason per measure that crossed)."""

    worse: bool
    reasons: list[str]
    before: Measures
    after: Measures

    def to_json(self) -> dict[str, object]:
        return {"worse": self.worse, "reasons": list(self.reasons), "before": self.before.to_json(),
                "after": self.after.to_json()}


def judge(before: Measures, after: Measures, task: str, thresholds: Thresholds = Thresholds()) -> Verdict:
    """Worse when a measure `task` is judged on crossed its threshold in the bad direction: sharpness or contrast
    fell by more than the relative drop, colour cast or clipped fraction rose by more than the absolute rise."""
    exempt = EXPECTED_CHANGES.get(task.strip().lower(), frozenset())
    reasons: list[str] = []
    for name, limit in (("sharpness", thresholds.sharpness_drop), ("contrast", thresholds.contrast_drop)):
        if name in exempt:
            continue
        old, new = getattr(before, name), getattr(after, name)
        if old > _NO_STRUCTURE and (old - new) / old > limit:
            reasons.append(f"{name} fell {(old - new) / old:.0%} ({old:.4f} -> {new:.4f})")
    for name, label, limit in (("colour_cast", "colour cast", thresholds.cast_rise),
                               ("clipped", "clipped fraction", thresholds.clipped_rise)):
        if name in exempt:
            continue
        old, new = getattr(before, name), getattr(after, name)
        if new - old > limit:
            reasons.append(f"{label} rose by {new - old:.4f} ({old:.4f} -> {new:.4f})")
    return Verdict(worse=bool(reasons), reasons=reasons, before=before, after=after)

