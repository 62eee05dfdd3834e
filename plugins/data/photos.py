"""Opening a user's photo the way they see it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError


def load_photo(path: str | Path) -> Image.Image:
    """RGB pixels of `path`, turned upright by its EXIF orientation (phone photos are stored sideways).

    Raises `ValueError` naming the file when it is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such photo")
    try:
        with Image.open(path) as opened:
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error
