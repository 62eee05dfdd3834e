"""Shared helpers: conversion between PIL and float arrays, option checks, and the filters several plugins use."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.errors import BadInput
from plugins.quoting import shown

#: Rec. 709 luma weights, for a brightness channel that follows perceived lightness.
LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

def to_array(image: Image.Image) -> np.ndarray:
    """RGB float32 in [0, 1], shape (H, W, 3); always a new array, so the caller's image is never touched."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Compose over white rather than dropping alpha, which would expose whatever colour sat under it.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # High-bit-depth greys: scale to 8 bit by their real range instead of clipping at 255.
        grey = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") or grey.max() > 255 else 255.0
        grey = np.clip(grey / peak, 0.0, 1.0)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_image(array: np.ndarray) -> Image.Image:
    """Clip to [0, 1] and round to an 8-bit RGB image."""
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), "RGB")


def luminance(array: np.ndarray) -> np.ndarray:
    return array @ LUMA


def number(name: str, value: object, low: float | None = None, high: float | None = None,
           low_open: bool = False) -> float:
    """`value` as a float within [low, high] (or (low, high] with `low_open`); `BadInput` naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadInput(f"option '{name}' must be a number, got {shown(value)}")
    value = float(value)
    if not np.isfinite(value):
        raise BadInput(f"option '{name}' must be finite, got {shown(value)}")
    if low is not None and (value <= low if low_open else value < low):
        raise BadInput(f"option '{name}' must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise BadInput(f"option '{name}' must be <= {high:g}, got {value:g}")
    return value


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse, before the work, a result larger than a photo may be (the limit `load_photo` sets for inputs)."""
    from plugins.data import photos

    if width * height > photos.MAX_PIXELS:
        raise BadInput(f"{what} would make a {width}x{height} image ({width * height / 1e6:.0f} Mpx); the limit is "
                         f"{photos.MAX_PIXELS / 1e6:.0f} Mpx")


def choice(name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadInput(f"option '{name}' must be one of {', '.join(allowed)}; got {shown(value)}")
    return str(value)


def scale_of(array: np.ndarray, reference: int = 512) -> float:
    """Pixels per reference pixel: window sizes tuned on 512-px photos carry over to any resolution."""
    return min(array.shape[:2]) / reference


def box(array: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (per channel for 3-D arrays); O(1) per pixel whatever the radius."""
    size = (2 * radius + 1, 2 * radius + 1) + (1,) * (array.ndim - 2)
    return ndimage.uniform_filter(array, size=size, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He, Sun and Tang, "Guided Image Filtering" (ECCV 2010), with a grey guide.

    The output is locally a linear function of the guide, so it follows the guide's edges while smoothing
    everything else; `eps` sets which variations count as edges (about the squared contrast to keep).
    """
    if source.ndim == 3:
        guide = guide[:, :, None]
    mean_g, mean_s = box(guide, radius), box(source, radius)
    cov = box(guide * source, radius) - mean_g * mean_s
    var = box(guide * guide, radius) - mean_g * mean_g
    a = cov / (var + eps)
    b = mean_s - a * mean_g
    return box(a, radius) * guide + box(b, radius)


def fill_from_neighbours(array: np.ndarray, mask: np.ndarray, sigma: float, rounds: int = 3) -> np.ndarray:
    """Replace the masked pixels by a Gaussian-weighted mean of the unmasked pixels around them.

    Normalised convolution (Knutsson and Westin, 1993): blur the kept pixels and the keep-weights alike and divide,
    so masked pixels never leak into the result. Pixels with no kept neighbour in reach are filled in later rounds
    with a doubled sigma, so even wide masks end up filled.
    """
    keep = (~mask).astype(np.float32)
    out = array.copy()
    missing = mask.copy()
    for _ in range(rounds):
        if not missing.any():
            break
        weight = ndimage.gaussian_filter(keep, sigma, mode="reflect")
        total = np.stack([ndimage.gaussian_filter(array[:, :, c] * keep, sigma, mode="reflect")
                          for c in range(array.shape[2])], axis=2)
        reached = missing & (weight > 1e-3)
        out[reached] = total[reached] / weight[reached, None]
        missing &= ~reached
        sigma *= 2
    if missing.any():  # nothing kept anywhere near: the mean of what was kept is the least-wrong guess
        out[missing] = array[~mask].mean(axis=0) if (~mask).any() else array[missing]
    return out


def odd(value: float, minimum: int = 3) -> int:
    size = max(minimum, round(value))
    return size if size % 2 else size + 1
