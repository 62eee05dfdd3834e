"""A third-party plugin of the `python` kind: sharpen a photo with an unsharp mask.

The registry never imports this module to list, search or validate the plugin; only running it does.
"""

from __future__ import annotations

from PIL import Image, ImageFilter


def sharpen(image: Image.Image, radius: float = 2.0, percent: int = 120, threshold: int = 2) -> Image.Image:
    """Return a sharpened copy of `image` (the original is left untouched)."""
    return image.convert("RGB").filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=threshold))
