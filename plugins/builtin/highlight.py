"""Specular-highlight removal under the dichromatic reflection model (Shafer, "Using Color to Separate Reflection
Components", 1985): a glint adds the light's colour (white) on top of the surface colour, I = J (1 - a) + a.

White light lifts all three channels alike, so the minimum channel carries the glint most clearly (the idea
behind specular-free images, Tan and Ikeuchi, TPAMI 2005). Its excess over a morphological opening (what the
surface looks like without small bright spots) estimates a, which the model lets us divide out. Where the glint
clipped to white nothing of the surface is left, so those pixels are inpainted from their surroundings.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from plugins.builtin._common import fill_from_neighbours, number, odd, scale_of, to_array, to_image


def highlight(image: Image.Image, threshold: float = 0.1, size: int = 0, clip_level: float = 0.85,
              min_level: float = 0.55) -> Image.Image:
    """Suppress glare and specular highlights. `threshold` (0-1): the weakest glint to touch; `size`: the widest
    highlight in pixels (0: from the photo's size); `clip_level`: glint strength above which pixels are
    rebuilt from their surroundings rather than corrected; `min_level` (0-1): how bright in its darkest channel a
    pixel must be to count as a glint."""
    threshold = number("threshold", threshold, 0.0, 1.0, low_open=True)
    size = int(number("size", size, 0, 4096))
    clip_level = number("clip_level", clip_level, 0.0, 1.0, low_open=True)
    min_level = number("min_level", min_level, 0.0, 1.0)
    array = to_array(image)
    scale = scale_of(array)
    window = odd(size + 2 if size else 60 * scale, minimum=3)

    low = array.min(axis=2)
    surface = ndimage.maximum_filter(ndimage.minimum_filter(low, window, mode="reflect"), window, mode="reflect")
    # Smooth the opening: its blocky plateaus would otherwise print squares into the correction.
    surface = ndimage.uniform_filter(surface, max(1, window // 2), mode="reflect")
    surface = np.minimum(surface, low)
    glint = np.clip((low - surface) / np.maximum(1.0 - surface, 1e-3), 0.0, 1.0)
    # Ramp in from the threshold rather than switching on, so the edit has no visible border.
    glint = glint * np.clip((glint - threshold) / threshold, 0.0, 1.0)
    # Texture also pokes above an opening; a glint is, besides, bright in all channels (I >= a by the model).
    # Only near-white pixels are treated, which gives up faint glints on dark surfaces to leave texture alone.
    glint = glint * np.clip((low - min_level) / 0.2, 0.0, 1.0)
    # A glint is a spot: bright areas wider than the window (a white wall, a sunlit shirt) are surfaces, even
    # where dark texture inside them pulls the opening down.
    labels, count = ndimage.label(glint > 0)
    if count == 0:
        return to_image(array)
    areas = np.bincount(labels.ravel())
    small = areas <= window * window
    small[0] = False
    glint = glint * small[labels]

    corrected = (array - glint[:, :, None]) / np.maximum(1.0 - glint[:, :, None], 1e-3)
    clipped = ndimage.binary_dilation(glint > clip_level, iterations=max(1, round(2 * scale)))
    if clipped.any():
        filled = fill_from_neighbours(np.where(clipped[:, :, None], array, corrected), clipped,
                                      sigma=max(1.0, 4.0 * scale))
        corrected = np.where(clipped[:, :, None], filled, corrected)
    return to_image(corrected)
