"""Opening a user's photo the way they see it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from plugins.errors import BadInput

#: Larger photos are refused before decoding, by the size their header states. This is the limit: Pillow's own
#: decompression-bomb warning (from 89.5 Mpx) is silenced for the check below, and its error comes at 179 Mpx.
MAX_PIXELS = 120_000_000


def load_photo(path: str | Path) -> Image.Image:
    """RGB pixels of `path`, turned upright by its EXIF orientation (phone photos are stored sideways).

    16-bit photos are scaled to 8 bits (not clipped), transparency is flattened onto white, CMYK and palette
    images are converted, and an animated image gives its first frame. Raises `BadInput` (a `ValueError`) naming
    the file when it is missing, empty, truncated, not an image or too large.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such photo")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # MAX_PIXELS is checked next
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > MAX_PIXELS:
                    raise BadInput(f"{path}: {width}x{height} is too large ({width * height / 1e6:.0f} Mpx; "
                                     f"the limit is {MAX_PIXELS / 1e6:.0f} Mpx): downscale it first")
                opened.seek(0)  # animated: the first frame
                upright = ImageOps.exif_transpose(opened)
                upright.load()
                return _to_rgb(upright)
    except Image.DecompressionBombError:  # over twice Pillow's limit, so over ours too
        # Pillow raises this only while its limit is set (not None)
        raise BadInput(f"{path}: too large (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} Mpx; the limit is "  # type: ignore[operator]
                         f"{MAX_PIXELS / 1e6:.0f} Mpx): downscale it first") from None
    except (OSError, UnidentifiedImageError, SyntaxError) as error:  # PIL raises SyntaxError for some bad files
        raise BadInput(f"{path}: not a readable image ({error})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float grey: scale, do not clip at 255
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") and values.max() > 255 else max(values.max(), 1.0)
        grey = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


#: Clean photos that ship with scikit-image (no download): name -> the `skimage.data` function that gives it.
SAMPLE_PHOTOS = {"astronaut": "astronaut", "chelsea": "chelsea", "coffee": "coffee", "rocket": "rocket",
                 "motorcycle": "stereo_motorcycle"}


def sample_photos() -> list[tuple[str, Image.Image]]:
    """The `SAMPLE_PHOTOS`, RGB, at their own size (scikit-image must be installed)."""
    import skimage.data

    named = []
    for name, loader in SAMPLE_PHOTOS.items():
        pixels = getattr(skimage.data, loader)()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels  # stereo pairs: the left view
        named.append((name, Image.fromarray(pixels).convert("RGB")))
    return named


def with_short_side(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled (up or down, LANCZOS) so that its short side is `size` pixels."""
    scale = size / min(image.size)
    size_out = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size_out, Image.Resampling.LANCZOS)
