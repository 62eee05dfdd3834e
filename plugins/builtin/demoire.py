"""Moire removal by notch filtering in the Fourier domain (the classic periodic-noise filter; Gonzalez and Woods,
"Digital Image Processing", ch. 5, notch reject filters).

A moire pattern is a few strong periodic components, so its energy sits in isolated peaks of the spectrum far
from DC, while a photo's spectrum falls off smoothly. Peaks are found as points that stand far above a median
of their frequency neighbourhood, then zeroed, with a soft edge, in every colour channel.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import luminance, number, to_array, to_image


def notch_mask(grey: np.ndarray, threshold: float, min_radius: float) -> np.ndarray:
    """Multiplicative mask for the (unshifted) FFT, 0 at periodic peaks and 1 elsewhere."""
    height, width = grey.shape
    # A Hann window keeps the photo's border discontinuity from drawing bright lines along the axes.
    window = np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)
    spectrum = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2((grey - grey.mean()) * window))))
    background = ndimage.median_filter(spectrum, size=9, mode="wrap")
    fy = (np.arange(height) - height // 2)[:, None] / height
    fx = (np.arange(width) - width // 2)[None, :] / width
    radius = np.hypot(fy, fx)
    peaks = (spectrum - background > threshold) & (radius > min_radius)
    # Axes carry what is left of edge effects and long horizontal or vertical structures, not moire.
    peaks &= (np.abs(fy) * height > 2) & (np.abs(fx) * width > 2)
    peaks = ndimage.binary_dilation(peaks, iterations=2)
    mask = 1.0 - ndimage.gaussian_filter(peaks.astype(np.float32), 1.0)
    mask = np.clip(mask * ~peaks, 0.0, 1.0)
    return np.fft.ifftshift(mask)


def demoire(image: Image.Image, threshold: float = 1.5, max_period: float = 0.0) -> Image.Image:
    """Remove moire ripples. `threshold` (log-magnitude above the local spectrum) decides what counts as a
    peak (lower removes more); only patterns with a period (pixels) below `max_period` are touched (0: a tenth
    of the short side), which protects the photo's own large-scale structure."""
    threshold = number("threshold", threshold, 0.0, 20.0, low_open=True)
    max_period = number("max_period", max_period, 0.0)
    array = to_array(image)
    if min(array.shape[:2]) < 16:  # too few frequencies to tell a pattern from the picture
        return to_image(array)
    max_period = max_period or min(array.shape[:2]) / 10
    mask = notch_mask(luminance(array), threshold, 1.0 / max(max_period, 2.0))
    spectrum = np.fft.fft2(array, axes=(0, 1))
    return to_image(np.real(np.fft.ifft2(spectrum * mask[:, :, None], axes=(0, 1))))
