"""Low-light enhancement by illumination-map estimation (Guo, Li and Ling, "LIME: Low-Light Image Enhancement
via Illumination Map Estimation", IEEE TIP 2017).

Retinex model: the photo is reflectance times illumination, I = R * T. LIME starts from the brightest colour
channel as T, refines it so it is smooth except at strong edges, softens it with a gamma and divides it out. The
paper solves the refinement as an optimisation; the guided filter (He et al., 2010) gives the same kind of
edge-aware smooth map in one pass. Division amplifies the noise hidden in the shadows, so, as in the paper, a
denoised copy is blended in where the illumination was low.

LIME's fixed gamma brightens every photo as if it were black: a dusk or indoor shot comes out as bright as
noon, far from how it was. So the gamma is the most the plugin may use, and it is lowered until the result's
mean brightness is no more than `brightness`; a photo already that bright is left as it was (`CannotHelp`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import guided_filter, luminance, number, scale_of, to_array, to_image
from plugins.errors import CannotHelp

#: Below this gamma the division changes the photo by less than JPEG noise: not worth an edit.
SMALLEST_GAMMA = 0.05


def fitting_gamma(array: np.ndarray, illumination: np.ndarray, most: float, brightness: float) -> float:
    """The largest gamma up to `most` whose result has a mean luminance of at most `brightness`.

    The mean grows with the gamma (every pixel is divided by T**gamma, T <= 1), so a bisection finds it; a
    subsample of the pixels is enough for a mean.
    """
    step = max(1, round(min(array.shape[:2]) / 256))
    lum, light = luminance(array[::step, ::step]), illumination[::step, ::step]

    def mean_after(gamma: float) -> float:
        return float(np.clip(lum / light**gamma, 0.0, 1.0).mean())

    if mean_after(most) <= brightness:
        return most
    low, high = 0.0, most
    for _ in range(12):
        middle = (low + high) / 2
        low, high = (middle, high) if mean_after(middle) <= brightness else (low, middle)
    return low


def lowlight(image: Image.Image, gamma: float = 0.8, brightness: float = 0.4, denoise: float = 1.0,
             floor: float = 0.03) -> Image.Image:
    """Brighten a dark photo by dividing out the illumination map raised to a gamma of at most `gamma` (0.8 is
    LIME's; higher brightens more), chosen so the result's mean brightness (0-1) stays at most `brightness`
    (1 turns that off); `denoise` (0-1) smooths the lifted shadows."""
    gamma = number("gamma", gamma, 0.0, 1.0, low_open=True)
    brightness = number("brightness", brightness, 0.0, 1.0, low_open=True)
    denoise = number("denoise", denoise, 0.0, 1.0)
    floor = number("floor", floor, 0.0, 1.0, low_open=True)
    array = to_array(image)
    scale = scale_of(array)

    initial = array.max(axis=2)
    radius = max(1, round(8 * scale))
    illumination = np.clip(guided_filter(initial, initial, radius, eps=1e-2), floor, 1.0)
    gamma = fitting_gamma(array, illumination, gamma, brightness)
    if gamma < SMALLEST_GAMMA:
        raise CannotHelp(f"the photo is already bright enough (mean brightness {luminance(array).mean():.2f}, "
                         f"the plugin brightens up to {brightness:.2f})")
    # The gamma keeps bright parts from being stretched as much as dark ones (T^gamma is closer to 1).
    enhanced = array / (illumination ** gamma)[:, :, None]

    if denoise > 0:
        sigma = max(0.5, 1.2 * scale * 512 / 256)
        smooth = np.stack([guided_filter(enhanced[:, :, c], enhanced[:, :, c], max(1, round(sigma)), eps=4e-3)
                           for c in range(3)], axis=2)
        smooth = ndimage.gaussian_filter(smooth, (0.5, 0.5, 0))
        # LIME's recomposition R*T + R_denoised*(1-T): the darker the place was, the more noise was lifted there.
        weight = (denoise * (1.0 - illumination))[:, :, None]
        enhanced = enhanced * (1.0 - weight) + smooth * weight
    return to_image(enhanced)
