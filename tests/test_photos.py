"""Every kind of photo a user may hand us opens correctly or fails with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plugins.data import photos
from plugins.data.photos import load_photo


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = (np.random.default_rng(0).random((20, 30)) * 65535).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    loaded = np.asarray(load_photo(tmp_path / "g16.png"), dtype=np.float64)
    assert loaded.shape == (20, 30, 3)
    assert abs(loaded.mean() - values.mean() / 257) < 1.0


def test_cmyk_alpha_palette_and_animation(tmp_path: Path) -> None:
    Image.new("CMYK", (10, 8), (0, 255, 0, 0)).save(tmp_path / "c.jpg")
    assert load_photo(tmp_path / "c.jpg").getpixel((0, 0))[1] < 30  # magenta: little green
    Image.new("RGBA", (10, 8), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert load_photo(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert load_photo(tmp_path / "a.gif").getpixel((0, 0))[0] > 200  # the first frame


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_photo(tmp_path / "r.jpg").size == (20, 40)


@pytest.mark.parametrize(("content", "message"), [(b"", "empty"), (b"hello", "not a readable image")])
def test_empty_and_non_images(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_photo(tmp_path / "x.png")


def test_truncated_and_missing(tmp_path: Path) -> None:
    data = (Path(__file__).resolve().parent.parent / "examples" / "photos" / "chelsea.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"t\.jpg: not a readable image"):
        load_photo(tmp_path / "t.jpg")
    with pytest.raises(ValueError, match="no such photo"):
        load_photo(tmp_path / "missing.jpg")


def test_enormous_dimensions_are_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setattr(photos, "MAX_PIXELS", 50_000)
    with pytest.raises(ValueError, match="300x200 is too large"):
        load_photo(tmp_path / "big.png")
