"""Haze removal with the dark channel prior (He, Sun and Tang, "Single Image Haze Removal Using Dark Channel
Prior", CVPR 2009 / TPAMI 2011), transmission refined with the guided filter (the TPAMI 2013 follow-up)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import guided_filter, luminance, number, odd, scale_of, to_array, to_image


def dark_channel(array: np.ndarray, patch: int) -> np.ndarray:
    """Minimum over colours and over a patch: close to 0 in haze-free outdoor photos, so haze shows up in it."""
    return ndimage.minimum_filter(array.min(axis=2), size=patch, mode="nearest")


def atmospheric_light(array: np.ndarray, dark: np.ndarray, fraction: float = 0.001) -> np.ndarray:
    """Colour of the haze: the brightest 0.1 % of the dark channel are the most haze-opaque pixels.

    He et al. take the single brightest input pixel among them; the mean of the brightest tenth of them is
    as close and not thrown by one white object.
    """
    flat_dark, flat = dark.ravel(), array.reshape(-1, 3)
    count = max(1, int(flat_dark.size * fraction))
    candidates = flat[np.argpartition(flat_dark, -count)[-count:]]
    brightest = candidates[np.argsort(candidates.sum(axis=1))[-max(1, count // 10):]]
    # A floor keeps division by A sane on dark photos with no haze at all.
    return np.maximum(brightest.mean(axis=0), 0.05)


def dehaze(image: Image.Image, strength: float = 0.95, t0: float = 0.1, patch: int = 0,
           radius: int = 0, tolerance: float = 0.0) -> Image.Image:
    """Remove haze; `strength` is the paper's omega (keep 1 - omega of the haze so depth still reads).

    `tolerance` spares pixels whose colour lies within it of the haze's (white objects, bright sky): the dark
    channel prior takes them for dense haze and turns them grey and grainy. Where |I - A| (the largest channel
    difference) is under it, the transmission is multiplied by tolerance / |I - A|, at most up to 1. It also spares
    real dense haze, so it is off by default (0.4 suits hazy photos of white or pale scenes; see
    docs/builtin-plugins.md).
    """
    strength = number("strength", strength, 0.0, 1.0)
    t0 = number("t0", t0, 0.0, 1.0, low_open=True)
    tolerance = number("tolerance", tolerance, 0.0, 1.0)
    patch = int(number("patch", patch, 0, 255))
    radius = int(number("radius", radius, 0, 1000))
    array = to_array(image)
    scale = scale_of(array)
    # The paper's 15-px patch and 60-px filter radius are for ~600-px photos; scale them with the photo.
    patch = odd(patch or 15 * scale * 600 / 512)
    radius = radius or max(2, round(40 * scale))

    airlight = atmospheric_light(array, dark_channel(array, patch))
    raw = 1.0 - strength * dark_channel(array / airlight, patch)
    transmission = guided_filter(luminance(array), raw, radius, eps=1e-3)
    if tolerance > 0:
        distance = np.abs(array - airlight).max(axis=2)
        transmission = np.minimum(transmission * np.maximum(tolerance / np.maximum(distance, 1e-6), 1.0), 1.0)
    transmission = np.clip(transmission, t0, 1.0)[:, :, None]
    return to_image((array - airlight) / transmission + airlight)
