"""Deblurring by Richardson-Lucy deconvolution (Richardson, "Bayesian-Based Iterative Method of Image
Restoration", JOSA 1972; Lucy, "An iterative technique for the rectification of observed distributions", AJ 1974)
with a Gaussian point-spread function, the usual stand-in when the real blur kernel is unknown."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import number, to_array, to_image


def richardson_lucy(observed: np.ndarray, sigma: float, iterations: int) -> np.ndarray:
    """Multiplicative RL updates u <- u * K'(d / K u); K is a Gaussian, so K' = K and each step is two blurs.

    Multiplicative updates keep the estimate positive and its mean equal to the input's, so unlike inverse
    filtering nothing goes negative or drifts in brightness.
    """
    blur = (sigma, sigma, 0)
    estimate = observed.copy()
    for _ in range(iterations):
        ratio = observed / np.maximum(ndimage.gaussian_filter(estimate, blur, mode="reflect"), 1e-4)
        estimate = estimate * ndimage.gaussian_filter(ratio, blur, mode="reflect")
    return estimate


def deblur(image: Image.Image, sigma: float = 0.0, iterations: int = 4, strength: float = 1.0) -> Image.Image:
    """Sharpen a blurred photo. `sigma` is the blur's size in pixels (0: guessed from the photo's size),
    `iterations` how far RL goes (more: sharper and noisier), `strength` (0-1.5) how much of the change to keep."""
    sigma = number("sigma", sigma, 0.0, 20.0)
    iterations = int(number("iterations", iterations, 1, 200))
    strength = number("strength", strength, 0.0, 1.5)
    array = to_array(image)
    # Camera shake grows with resolution; ~0.65 % of the short side matches a typical hand-held shake.
    sigma = sigma or float(np.clip(0.0065 * min(array.shape[:2]), 0.7, 4.0))
    # Work a little above zero so the ratio is defined in black areas.
    restored = richardson_lucy(array + 0.01, sigma, iterations) - 0.01
    return to_image(array + strength * (restored - array))
