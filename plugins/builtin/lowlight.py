"""Low-light enhancement by illumination-map estimation (Guo, Li and Ling, "LIME: Low-Light Image Enhancement
via Illumination Map Estimation", IEEE TIP 2017).

Retinex model: the photo is reflectance times illumination, I = R * T. LIME starts from the brightest colour
channel as T, refines it so it is smooth except at strong edges, softens it with a gamma and divides it out. The
paper solves the refinement as an optimisation; the guided filter (He et al., 2010) gives the same kind of
edge-aware smooth map in one pass. Division amplifies the noise hidden in the shadows, so, as in the paper, a
denoised copy is blended in where the illumination was low.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import guided_filter, number, scale_of, to_array, to_image


def lowlight(image: Image.Image, gamma: float = 0.8, denoise: float = 1.0, floor: float = 0.03) -> Image.Image:
    """Brighten a dark photo by dividing out the illumination map raised to `gamma`: higher `gamma` brightens more
    (0.8 is LIME's), `denoise` (0-1) smooths the lifted shadows."""
    gamma = number("gamma", gamma, 0.0, 1.0, low_open=True)
    denoise = number("denoise", denoise, 0.0, 1.0)
    floor = number("floor", floor, 0.0, 1.0, low_open=True)
    array = to_array(image)
    scale = scale_of(array)

    initial = array.max(axis=2)
    radius = max(1, round(8 * scale))
    illumination = np.clip(guided_filter(initial, initial, radius, eps=1e-2), floor, 1.0)
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
