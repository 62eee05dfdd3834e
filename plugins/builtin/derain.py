"""Rain-streak and snowflake removal by morphological detection and inpainting from neighbours.

Rain streaks and snowflakes are small, bright, colourless structures on top of the scene. A white top-hat (the
photo minus its morphological opening; Serra, "Image Analysis and Mathematical Morphology", 1982) keeps exactly
the bright things narrower than the structuring element. For rain the element is a horizontal line: streaks fall
at most ~30 degrees off vertical, so they are thin across and are caught, while long vertical edges of the scene
are not. Rain falls one way: of what the top-hat finds, only the elongated pieces that share the dominant direction
(within `ALIGNMENT_TOLERANCE`) are taken for streaks, so fur, hair, grass and other bright texture pointing every
way stays. The detected pixels are replaced by a normalised convolution of the pixels around them.

Where the detected pixels are so many that much of them lies far from any intact pixel (heavy real rain, or a
scene full of bright texture), filling would paint blobs over the photo: the plugin then raises `CannotHelp` and
the photo is left as it was.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import fill_from_neighbours, number, odd, scale_of, to_array, to_image
from plugins.errors import CannotHelp


def _opening(channel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    # Separable min then max filter: the same as grey_opening for a rectangle, and fast for any size.
    return ndimage.maximum_filter(ndimage.minimum_filter(channel, size=size, mode="reflect"), size=size,
                                  mode="reflect")


def _bright_residue(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """How much brighter than its opening each pixel is, in every channel at once (streaks and flakes are
    white, so they lift all three; coloured detail lifts only some)."""
    return np.stack([array[:, :, c] - _opening(array[:, :, c], size) for c in range(3)], axis=2).min(axis=2)


# The share of the photo that may lie farther than 2x the rim width from any kept pixel. Beyond it the fill
# paints blobs over the scene: on heavy real rain the mask covers 90-98% of the photo and 85% of it is out of
# reach, while synthetic rain at full strength stays at or below 36% (skimage photos) and light real rain at 20-37%.
MAX_OUT_OF_REACH = 0.5


#: How far a streak's direction may be from the rain's dominant direction (synthetic and real rain: the wind's angle,
#: give or take ten degrees), and how much longer than wide a piece must be to have a direction at all.
ALIGNMENT_TOLERANCE = np.deg2rad(25.0)
MIN_ELONGATION = 2.0


def _aligned(mask: np.ndarray) -> np.ndarray:
    """The pieces of `mask` (4-connected) that are elongated and point the way most of the elongated area points.

    Each piece's direction and elongation come from its second moments (the covariance of its pixel coordinates);
    the dominant direction is the area-weighted mean of the doubled angles, so that 0 and 180 degrees agree."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    ys, xs = (coordinates.astype(float) for coordinates in np.nonzero(labels))
    piece = labels[labels > 0]
    area = np.bincount(piece, minlength=count + 1).astype(float)
    area[0] = 1.0  # the background, ignored below; keeps the divisions finite

    def mean(values: np.ndarray) -> np.ndarray:
        return np.bincount(piece, values, count + 1) / area

    mean_x, mean_y = mean(xs), mean(ys)
    # + 1/12: a pixel's own extent, so that a one-pixel-wide line has a finite elongation.
    var_x, var_y = mean(xs * xs) - mean_x**2 + 1 / 12, mean(ys * ys) - mean_y**2 + 1 / 12
    cov = mean(xs * ys) - mean_x * mean_y
    doubled = np.arctan2(2 * cov, var_x - var_y)
    spread = np.hypot((var_x - var_y) / 2, cov)
    longest, shortest = (var_x + var_y) / 2 + spread, (var_x + var_y) / 2 - spread
    elongated = (longest >= MIN_ELONGATION**2 * np.maximum(shortest, 1e-9)) & (area >= 3)
    elongated[0] = False
    if not elongated.any():
        return np.zeros_like(mask)
    weight = area * elongated
    dominant = np.arctan2((weight * np.sin(doubled)).sum(), (weight * np.cos(doubled)).sum())
    off = np.abs(np.angle(np.exp(1j * (doubled - dominant)))) / 2
    return (elongated & (off <= ALIGNMENT_TOLERANCE))[labels]


def _compact(mask: np.ndarray, max_area: int) -> np.ndarray:
    """The pieces of `mask` no larger than `max_area`: flakes are compact spots; a bright region bigger than the
    window is the scene (white clothes, a sign) whose darker texture lets it through the top-hat."""
    if not mask.any():
        return mask
    labels, _ = ndimage.label(mask)
    keep = np.bincount(labels.ravel()) <= max_area
    keep[0] = False
    return keep[labels]


def _remove(array: np.ndarray, mask: np.ndarray, grow: int, sigma: float, what: str) -> np.ndarray:
    if grow:
        # The soft rims of streaks are below the threshold but still lighter than the scene.
        mask = ndimage.binary_dilation(mask, iterations=grow)
    if not mask.any():
        return array
    out_of_reach = float((ndimage.distance_transform_edt(mask) > 2 * max(grow, 1)).mean())
    if out_of_reach > MAX_OUT_OF_REACH:
        raise CannotHelp(f"the {what} it found covers {mask.mean():.0%} of the photo, too much of it far from any "
                         f"intact pixel to fill in without painting over the scene")
    return fill_from_neighbours(array, mask, sigma)


def derain(image: Image.Image, threshold: float = 0.04, width: int = 0) -> Image.Image:
    """Remove rain streaks. `threshold` (0-1): how much brighter than its surroundings a streak must be;
    `width`: the widest streak in pixels (0: from the photo's size)."""
    threshold = number("threshold", threshold, 0.0, 1.0, low_open=True)
    width = int(number("width", width, 0, 255))
    array = to_array(image)
    scale = scale_of(array)
    size = odd(width * 2 + 1 if width else 9 * scale * 2, minimum=3)
    residue = _bright_residue(array, (1, size))
    return to_image(_remove(array, _aligned(residue > threshold), max(1, round(scale * 2)),
                            max(1.0, 2.0 * scale * 2), "rain"))


def desnow(image: Image.Image, threshold: float = 0.15, flake_size: int = 0) -> Image.Image:
    """Remove snowflakes. `threshold` (0-1): how much brighter than its surroundings a flake must be;
    `flake_size`: the largest flake's diameter in pixels (0: from the photo's size)."""
    threshold = number("threshold", threshold, 0.0, 1.0, low_open=True)
    flake_size = int(number("flake_size", flake_size, 0, 255))
    array = to_array(image)
    scale = scale_of(array)
    size = odd(flake_size + 2 if flake_size else 24 * scale, minimum=3)
    residue = _bright_residue(array, (size, size))
    return to_image(_remove(array, _compact(residue > threshold, size * size // 2), max(1, round(scale * 2)),
                            max(1.0, 3.0 * scale * 2), "snow"))
