"""Paired full-reference metrics: PSNR and SSIM of a restored photo against its clean original.

Computed with scikit-image on the full image, in RGB, 8-bit (data range 255): SSIM with its default 7x7
uniform window over the three channels (`channel_axis=2`), averaged. No crop, no luminance-only variant, so
figures compare with other tools only when they make the same choices (many papers use Y-channel PSNR).
"""

from __future__ import annotations

import numpy as np
import PIL.Image

#: PSNR of identical images: infinite in theory, capped so results stay valid JSON.
PSNR_IDENTICAL = 100.0


def as_rgb8(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def psnr_ssim(image: PIL.Image.Image, clean: PIL.Image.Image) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of `image` against `clean`; identical images give `PSNR_IDENTICAL`."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = as_rgb8(image), as_rgb8(clean)
    if a.shape != b.shape:
        raise ValueError(f"sizes differ: {image.width}x{image.height} vs clean {clean.width}x{clean.height}")
    if np.array_equal(a, b):
        return PSNR_IDENTICAL, 1.0
    return (float(peak_signal_noise_ratio(b, a, data_range=255)),
            float(structural_similarity(b, a, channel_axis=2, data_range=255)))
