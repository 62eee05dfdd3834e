"""Everyday adjustments: exposure, contrast, saturation, white balance, resize, rotate and crop.

Brightness and colour edits work on linear light (sRGB decoded, IEC 61966-2-1), where scaling a value scales the
light it stands for; doing them on gamma-encoded values shifts hues and crushes shadows.
"""

from __future__ import annotations

import math
import re

import numpy as np
from PIL import Image

from plugins.builtin._common import LUMA, check_pixels, choice, number, to_array, to_image
from plugins.errors import BadInput
from plugins.quoting import shown


def srgb_to_linear(array: np.ndarray) -> np.ndarray:
    return np.where(array <= 0.04045, array / 12.92, ((array + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(array: np.ndarray) -> np.ndarray:
    array = np.clip(array, 0.0, None)
    return np.where(array <= 0.0031308, array * 12.92, 1.055 * array ** (1 / 2.4) - 0.055)


def exposure(image: Image.Image, ev: float = 1.0) -> Image.Image:
    """Brighten (ev > 0) or darken (ev < 0) by `ev` stops, as a longer or shorter exposure would: light x 2^ev."""
    ev = number("ev", ev, -10.0, 10.0)
    return to_image(linear_to_srgb(srgb_to_linear(to_array(image)) * 2.0**ev))


def contrast(image: Image.Image, amount: float = 1.2) -> Image.Image:
    """Stretch (amount > 1) or flatten (amount < 1) tones around the photo's mean brightness."""
    amount = number("amount", amount, 0.0, 5.0)
    array = to_array(image)
    # Around the mean rather than mid-grey, so a dark photo does not also get darker overall.
    mean = float((array @ LUMA).mean())
    return to_image(mean + (array - mean) * amount)


def saturation(image: Image.Image, amount: float = 1.3) -> Image.Image:
    """More (amount > 1) or less (amount < 1; 0 is black and white) colour, brightness kept."""
    amount = number("amount", amount, 0.0, 5.0)
    linear = srgb_to_linear(to_array(image))
    grey = (linear @ LUMA)[:, :, None]
    return to_image(linear_to_srgb(grey + (linear - grey) * amount))


def white_balance(image: Image.Image, method: str = "gray-world", strength: float = 1.0) -> Image.Image:
    """Remove a colour cast. 'gray-world' (Buchsbaum, 1980): the scene averages to grey; 'white-patch'
    (Land's retinex): the brightest pixels are white. `strength` (0-1) blends towards the full correction."""
    method = choice("method", method, ("gray-world", "white-patch"))
    strength = number("strength", strength, 0.0, 1.0)
    linear = srgb_to_linear(to_array(image))
    flat = linear.reshape(-1, 3)
    # White patch takes the 99th percentile, not the maximum, so a few clipped pixels do not set the white point.
    reference = flat.mean(axis=0) if method == "gray-world" else np.percentile(flat, 99, axis=0)
    reference = np.maximum(reference, 1e-4)
    # Gains keep the mean brightness (green-anchored gains would brighten or darken the whole photo).
    gains = reference.mean() / reference
    gains = 1.0 + strength * (gains - 1.0)
    return to_image(linear_to_srgb(linear * gains))


def resize(image: Image.Image, width: int = 0, height: int = 0, scale: float | None = None) -> Image.Image:
    """Resize to `width` x `height` pixels (give one to keep the aspect ratio) or by `scale` (half the size when
    none is given); Lanczos filter."""
    width = int(number("width", width, 0, 32768))
    height = int(number("height", height, 0, 32768))
    if scale is not None and (width or height):
        raise BadInput("options 'scale' and 'width'/'height' exclude each other; give one or the other")
    # The default lives here, not in the manifest's options: those are merged into every call, and a default
    # scale would then clash with a width the user gave.
    scale = number("scale", 0.5 if scale is None and not (width or height) else scale or 0.0, 0.0, 16.0)
    if scale:
        width, height = round(image.width * scale), round(image.height * scale)
    elif width and not height:
        height = round(image.height * width / image.width)
    elif height and not width:
        width = round(image.width * height / image.height)
    elif not width:
        raise BadInput("option 'width', 'height' or 'scale' is needed to resize")
    if width < 1 or height < 1:
        raise BadInput(f"options 'width'/'height'/'scale' give an empty image ({width}x{height})")
    check_pixels(width, height, "resize")
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def rotate(image: Image.Image, angle: float = 90.0, expand: bool = True) -> Image.Image:
    """Rotate counter-clockwise by `angle` degrees (negative: clockwise). Multiples of 90 are exact; other
    angles use bicubic resampling, and `expand` grows the canvas so no corner is cut (the new area is black)."""
    angle = number("angle", angle, -360.0, 360.0)
    if not isinstance(expand, bool):
        raise BadInput(f"option 'expand' must be true or false, got {shown(expand)}")
    if expand:  # the canvas grows to the rotated photo's bounding box: up to twice the pixels at 45 degrees
        turn = math.radians(angle)
        cos, sin = abs(math.cos(turn)), abs(math.sin(turn))
        check_pixels(math.ceil(image.width * cos + image.height * sin),
                     math.ceil(image.width * sin + image.height * cos), f"rotate by {angle:g} degrees")
    source = image.convert("RGB")
    quarter = angle % 360
    exact = {0.0: None, 90.0: Image.Transpose.ROTATE_90, 180.0: Image.Transpose.ROTATE_180,
             270.0: Image.Transpose.ROTATE_270}
    if quarter in exact:  # lossless: a transpose moves pixels, resampling would blur them
        method = exact[quarter]
        return source.copy() if method is None else source.transpose(method)
    return source.rotate(angle, resample=Image.Resampling.BICUBIC, expand=expand)


_ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:/x]\s*(\d+(?:\.\d+)?)\s*$")


def crop(image: Image.Image, left: float = 0.0, top: float = 0.0, right: float = 0.0, bottom: float = 0.0,
         aspect: str = "", unit: str = "fraction") -> Image.Image:
    """Cut `left`, `top`, `right`, `bottom` off the edges (fractions of the size, or pixels with unit 'px'), then,
    if `aspect` is given ('16:9', '1:1', '4x5'), the largest centred part with that aspect ratio."""
    unit = choice("unit", unit, ("fraction", "px"))
    source = image.convert("RGB")
    width, height = source.size
    limit = 1.0 if unit == "fraction" else float(max(width, height))
    margins = {name: number(name, value, 0.0, limit)
               for name, value in (("left", left), ("top", top), ("right", right), ("bottom", bottom))}
    if unit == "fraction":
        margins = {k: v * (width if k in ("left", "right") else height) for k, v in margins.items()}
    x0, y0 = round(margins["left"]), round(margins["top"])
    x1, y1 = width - round(margins["right"]), height - round(margins["bottom"])
    if x1 - x0 < 1:
        raise BadInput(f"options 'left' and 'right' remove the whole width ({width} px)")
    if y1 - y0 < 1:
        raise BadInput(f"options 'top' and 'bottom' remove the whole height ({height} px)")
    if aspect:
        match = _ASPECT.match(aspect) if isinstance(aspect, str) else None
        if not match or float(match[1]) <= 0 or float(match[2]) <= 0:
            raise BadInput(f"option 'aspect' must look like '16:9', got {shown(aspect)}")
        ratio = float(match[1]) / float(match[2])
        w, h = x1 - x0, y1 - y0
        if w / h > ratio:
            new_w = max(1, round(h * ratio))
            x0 += (w - new_w) // 2
            x1 = x0 + new_w
        else:
            new_h = max(1, round(w / ratio))
            y0 += (h - new_h) // 2
            y1 = y0 + new_h
    return source.crop((x0, y0, x1, y1))
