"""Edge-preserving noise reduction with the guided filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010)
and a noise level from Immerkaer's estimator ("Fast Noise Variance Estimation", CVIU 1996)."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import guided_filter, luminance, number, to_array, to_image

_LAPLACE_DIFFERENCE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_sigma(grey: np.ndarray) -> float:
    """Standard deviation of white noise in `grey`: the 3x3 mask cancels smooth image structure (up to second
    order), leaving mostly noise; the mean absolute response scales to sigma by sqrt(pi/2)/6."""
    if min(grey.shape) < 3:
        return 0.0
    response = ndimage.convolve(grey, _LAPLACE_DIFFERENCE, mode="reflect")[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) / 6 * np.abs(response).mean())


def denoise(image: Image.Image, sigma: float = 0.0, strength: float = 1.0, radius: int = 2) -> Image.Image:
    """Reduce grain. `sigma`: noise level on the 0-255 scale (0: measured from the photo); `strength`
    (0-2) scales how much counts as noise; `radius`: filter window radius in pixels."""
    sigma = number("sigma", sigma, 0.0, 255.0)
    strength = number("strength", strength, 0.0, 2.0)
    radius = int(number("radius", radius, 1, 32))
    array = to_array(image)
    grey = luminance(array)
    level = sigma / 255.0 if sigma else noise_sigma(grey)
    if level <= 0 or strength == 0:
        return to_image(array)
    # eps ~ noise variance: variations the size of the noise are smoothed, larger ones (edges) are kept.
    eps = (strength * level) ** 2 * 2.0
    # Each channel guided by itself: colour noise is independent per channel, so a shared grey guide would
    # keep chroma speckle.
    out = np.stack([guided_filter(array[:, :, c], array[:, :, c], radius, eps) for c in range(3)], axis=2)
    return to_image(out)
