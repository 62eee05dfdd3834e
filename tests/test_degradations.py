"""Synthetic degradations and paired datasets (plugins.data), checked on a real photo at 128 px."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage import data

from plugins.data.degradations import DEGRADATIONS, TASK_OF_DEGRADATION, degrade, to_array
from plugins.data.pairs import Pair, make_paired_dataset, read_pair_rows, read_pairs, write_pairs

SIZE = 128


@pytest.fixture(scope="module")
def photo_image() -> Image.Image:
    return Image.fromarray(data.astronaut()).resize((SIZE, SIZE), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo(photo_image: Image.Image) -> np.ndarray:
    return to_array(photo_image)


def apply(name: str, image: np.ndarray, seed: int = 0, strength: float = 1.0) -> np.ndarray:
    return DEGRADATIONS[name](image.copy(), np.random.default_rng(seed), strength)


def grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2)


def sharpness(image: np.ndarray) -> float:
    return float(ndimage.laplace(grey(image)).var())


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """Pixel coordinates (N x 2) of each 8-connected component of a mask."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    return [np.argwhere(labels == index) for index in range(1, count + 1)]


def elongation_and_angle(points: np.ndarray) -> tuple[float, float]:
    """Ratio of the principal axes' spreads, and the main axis' angle from vertical in degrees (0-90)."""
    values, vectors = np.linalg.eigh(np.cov(points.T.astype(float)))
    main = vectors[:, 1]
    return float(np.sqrt(values[1] / max(values[0], 1e-3))), float(np.degrees(np.arccos(abs(main[0]))))


def blockiness(image: np.ndarray) -> float:
    """Mean jump across 8x8 block borders relative to the mean jump inside blocks (1 for a smooth photo)."""
    jumps = np.abs(np.diff(grey(image), axis=1))
    at_borders = jumps[:, 7::8]
    inside = np.delete(jumps, np.s_[7::8], axis=1)
    return float(at_borders.mean() / inside.mean())


# ------------------------------------------------------------------------------------------ registry


def test_registry_names_and_tasks() -> None:
    assert set(DEGRADATIONS) == {"haze", "rain", "snow", "blur", "lowlight", "noise", "jpeg"}
    assert set(TASK_OF_DEGRADATION) == set(DEGRADATIONS)
    assert TASK_OF_DEGRADATION["rain"] == "derain" and TASK_OF_DEGRADATION["jpeg"] is None


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_changes_image_keeps_shape_dtype_range(photo: np.ndarray, name: str) -> None:
    out = apply(name, photo)
    assert out.shape == photo.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.abs(out - photo).mean() > 0.01
    assert not np.shares_memory(out, photo)


@pytest.mark.parametrize("name", ["haze", "rain", "snow", "blur", "lowlight", "noise"])
def test_zero_strength_is_identity(photo: np.ndarray, name: str) -> None:
    np.testing.assert_allclose(apply(name, photo, strength=0.0), photo, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DEGRADATIONS))
def test_more_strength_changes_more(photo: np.ndarray, name: str) -> None:
    mild = np.abs(apply(name, photo, strength=0.5) - photo).mean()
    strong = np.abs(apply(name, photo, strength=1.5) - photo).mean()
    assert strong > mild


@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_bad_strength_rejected(photo: np.ndarray, bad: float) -> None:
    with pytest.raises(ValueError, match="strength"):
        apply("haze", photo, strength=bad)


def test_non_rgb_array_rejected(photo: np.ndarray) -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        apply("noise", grey(photo))


# ------------------------------------------------------------------------------- what each one does


def test_haze_brightens_lowers_contrast_more_at_top(photo: np.ndarray) -> None:
    out = apply("haze", photo)
    assert out.mean() > photo.mean() + 0.05
    assert out.std() < 0.8 * photo.std()
    # On a flat dark scene the added airlight shows the transmission: farther (upper) parts get more of it.
    veiled = grey(apply("haze", np.full_like(photo, 0.1))).mean(axis=1)
    assert veiled[: SIZE // 4].mean() > veiled[-SIZE // 4 :].mean() + 0.1


def test_lowlight_darkens(photo: np.ndarray) -> None:
    out = apply("lowlight", photo)
    assert out.mean() < 0.5 * photo.mean()
    # Gamma > 1 crushes shadows harder than highlights, so relative contrast grows.
    assert out.std() / out.mean() > photo.std() / photo.mean()


def test_blur_lowers_sharpness(photo: np.ndarray) -> None:
    assert sharpness(apply("blur", photo)) < 0.5 * sharpness(photo)


def test_noise_is_zero_mean_with_plausible_sigma(photo: np.ndarray) -> None:
    residual = apply("noise", photo) - photo
    assert abs(residual.mean()) < 0.01
    assert 0.03 < residual.std() < 0.12
    assert sharpness(photo + residual) > 1.3 * sharpness(photo)


def test_jpeg_adds_block_artifacts(photo: np.ndarray) -> None:
    assert blockiness(apply("jpeg", photo)) > 1.15 * blockiness(photo)


def test_rain_adds_thin_slanted_streaks_and_only_lightens(photo: np.ndarray) -> None:
    out = apply("rain", photo, seed=3)
    added = grey(out - photo)
    assert (out >= photo - 1e-6).all()
    bright = added > 0.08
    assert 0.01 < bright.mean() < 0.3
    streaks = [elongation_and_angle(points) for points in blobs(bright) if len(points) >= 6]
    assert len(streaks) >= 10
    ratios, angles = np.array(streaks).T
    assert np.median(ratios) > 3
    # One wind direction: most streaks share it within a few degrees.
    assert np.mean(np.abs(angles - np.median(angles)) < 12) > 0.7


def test_snow_adds_round_flakes_of_several_sizes(photo: np.ndarray) -> None:
    out = apply("snow", photo, seed=3)
    assert (grey(out) > grey(photo) + 0.2).mean() > 0.01
    # A flat dark scene shows every flake, where on the photo some vanish against bright areas.
    flakes = blobs(grey(apply("snow", np.full_like(photo, 0.1), seed=3)) > 0.4)
    sizes = np.array([len(points) for points in flakes])
    assert (sizes <= 4).sum() >= 30
    assert (sizes >= 12).sum() >= 3
    big = [elongation_and_angle(points)[0] for points in flakes if len(points) >= 12]
    assert np.median(big) < 1.5


# ------------------------------------------------------------------------------------------ degrade()


def test_degrade_is_deterministic_per_seed(photo_image: Image.Image) -> None:
    names = ["haze", "rain", "noise"]
    first = np.asarray(degrade(photo_image, names, seed=5))
    again = np.asarray(degrade(photo_image, names, seed=5))
    other = np.asarray(degrade(photo_image, names, seed=6))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_degrade_applies_in_order_and_returns_rgb(photo_image: Image.Image) -> None:
    rain_then_blur = degrade(photo_image.convert("RGBA"), ["rain", "blur"], seed=1)
    blur_then_rain = degrade(photo_image, ["blur", "rain"], seed=1)
    assert rain_then_blur.mode == "RGB" and rain_then_blur.size == photo_image.size
    # Streaks drawn last stay sharp; streaks blurred afterwards do not.
    assert sharpness(to_array(blur_then_rain)) > 1.5 * sharpness(to_array(rain_then_blur))


def test_degrade_unknown_name(photo_image: Image.Image) -> None:
    with pytest.raises(ValueError, match=r"'fog'.*haze, rain, snow, blur, lowlight, noise, jpeg"):
        degrade(photo_image, ["haze", "fog"])


def test_degrade_accepts_a_single_name(photo_image: Image.Image) -> None:
    np.testing.assert_array_equal(np.asarray(degrade(photo_image, "haze")), np.asarray(degrade(photo_image, ["haze"])))


# ------------------------------------------------------------------------------------------- datasets


@pytest.fixture()
def clean_dir(tmp_path: Path, photo_image: Image.Image) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo_image.save(folder / "astronaut.png")
    Image.fromarray(data.chelsea()).resize((96, 64)).save(folder / "chelsea.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_make_paired_dataset_round_trips(clean_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int | None]] = []
    out = tmp_path / "dataset"
    csv_path = make_paired_dataset(
        clean_dir, out, ["rain", "jpeg"], seed=1, per_image=2, progress=lambda e: calls.append((e.done, e.total))
    )
    assert csv_path == out / "pairs.csv"
    assert calls == [(1, 2), (2, 2)]
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "image,conditioning_image"
    assert lines[1] == "clean/astronaut.png,degraded/astronaut_0.png"

    pairs = read_pairs(csv_path)
    assert len(pairs) == 4
    assert sorted(path.name for path in (out / "degraded").iterdir()) == [
        "astronaut_0.png",
        "astronaut_1.png",
        "chelsea_0.png",
        "chelsea_1.png",
    ]
    for pair in pairs:
        assert pair.clean.is_file() and pair.degraded.is_file()
        assert pair.clean.read_bytes() == (clean_dir / pair.clean.name).read_bytes()
        clean, degraded = to_array(Image.open(pair.clean)), to_array(Image.open(pair.degraded))
        assert clean.shape == degraded.shape
        assert np.abs(clean - degraded).mean() > 0.01
    # Each version has its own seed.
    first, second = (to_array(Image.open(pair.degraded)) for pair in pairs[:2])
    assert np.abs(first - second).mean() > 0.01


def test_make_paired_dataset_is_reproducible(clean_dir: Path, tmp_path: Path) -> None:
    a = read_pairs(make_paired_dataset(clean_dir, tmp_path / "a", ["snow"], seed=4))
    b = read_pairs(make_paired_dataset(clean_dir, tmp_path / "b", ["snow"], seed=4))
    for x, y in zip(a, b, strict=True):
        assert x.degraded.read_bytes() == y.degraded.read_bytes()


def test_make_paired_dataset_refuses_to_overwrite(clean_dir: Path, tmp_path: Path) -> None:
    csv_path = make_paired_dataset(clean_dir, tmp_path / "dataset", ["noise"])
    before = csv_path.read_bytes()
    with pytest.raises(FileExistsError, match=r"pairs\.csv already exists"):
        make_paired_dataset(clean_dir, tmp_path / "dataset", ["blur"])
    assert csv_path.read_bytes() == before


def test_make_paired_dataset_refuses_leftovers_of_an_interrupted_run(clean_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "dataset" / "degraded").mkdir(parents=True)
    (tmp_path / "dataset" / "degraded" / "mine.png").write_bytes(b"user data")
    with pytest.raises(FileExistsError, match="already holds files"):
        make_paired_dataset(clean_dir, tmp_path / "dataset", ["noise"])


def test_make_paired_dataset_errors(clean_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        make_paired_dataset(empty, tmp_path / "out", ["noise"])
    with pytest.raises(ValueError, match="'smog'"):
        make_paired_dataset(clean_dir, tmp_path / "out", ["smog"])
    assert not (tmp_path / "out").exists()


def test_images_sharing_a_stem_stay_apart(clean_dir: Path, tmp_path: Path) -> None:
    Image.open(clean_dir / "astronaut.png").save(clean_dir / "astronaut.jpg")
    pairs = read_pairs(make_paired_dataset(clean_dir, tmp_path / "dataset", ["noise"]))
    assert len({pair.degraded for pair in pairs}) == 3


# ----------------------------------------------------------------------------------------------- CSV


@pytest.fixture()
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    clean, degraded = tmp_path / "c.png", tmp_path / "d.png"
    for path in (clean, degraded):
        Image.new("RGB", (4, 4)).save(path)
    return clean, degraded


def test_read_pairs_header_order_and_absolute_paths(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    clean, degraded = two_files
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(f"conditioning_image,image\nd.png,c.png\n{degraded},{clean}\n")
    assert read_pairs(csv_path) == [Pair(clean=clean, degraded=degraded)] * 2


def test_write_pairs_relative_posix_paths(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    clean, degraded = two_files
    csv_path = tmp_path / "sub" / "pairs.csv"
    write_pairs(csv_path, [Pair(clean=clean, degraded=degraded)])
    assert csv_path.read_text() == "image,conditioning_image\n../c.png,../d.png\n"
    (pair,) = read_pairs(csv_path)
    assert pair.clean.resolve() == clean.resolve() and pair.degraded.resolve() == degraded.resolve()


def test_read_pair_rows_count_the_header_and_blank_rows(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    clean, degraded = two_files
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,conditioning_image\nc.png,d.png\n\nc.png,d.png\n")
    pair = Pair(clean=clean, degraded=degraded)
    assert read_pair_rows(csv_path) == [(2, pair), (4, pair)]


def test_read_pairs_names_missing_file_and_row(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text("image,conditioning_image\nc.png,d.png\n\nc.png,gone.png\n")
    with pytest.raises(ValueError) as caught:
        read_pairs(csv_path)
    message = str(caught.value)
    assert f"{csv_path}: 1 problem(s)" in message
    assert "row 4: conditioning_image (degraded) file not found: gone.png" in message


def test_read_pairs_lists_every_bad_row_up_to_five(tmp_path: Path, two_files: tuple[Path, Path]) -> None:
    csv_path = tmp_path / "pairs.csv"
    rows = [f"c.png,gone{k}.png" for k in range(6)] + [",d.png"]
    csv_path.write_text("image,conditioning_image\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError) as caught:
        read_pairs(csv_path)
    message = str(caught.value)
    assert f"{csv_path}: 7 problem(s)" in message
    assert "row 2: conditioning_image (degraded) file not found: gone0.png" in message
    assert "row 6: conditioning_image (degraded) file not found: gone4.png" in message
    assert "gone5.png" not in message and "no image (clean) path" not in message
    assert "\n  ... and 2 more\n" in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"pairs\.csv: the file is empty; its first row must be the header 'image,conditioning_image'"),
        ("image,degraded\nc.png,d.png\n", r"row 1: the header lacks column\(s\) conditioning_image"),
        ("image,image,conditioning_image\nc.png,c.png,d.png\n", "row 1: the header names image more than once"),
        ("image,conditioning_image\n", "no pairs below the header"),
        ("image,conditioning_image\nc.png\n", r"row 2: no conditioning_image \(degraded\) path"),
    ],
)
def test_read_pairs_format_errors(tmp_path: Path, two_files: tuple[Path, Path], text: str, message: str) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_pairs(csv_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("image,conditioning_image\nc.png,d\xe9.png\n".encode("latin-1"), "not UTF-8 text"),
        # The csv module refuses a field over its size limit (128 KiB by default) rather than read it.
        (b"image,conditioning_image\nc.png," + b"d" * 200_000 + b"\n", "not a readable CSV"),
    ],
)
def test_read_pairs_unreadable_text(tmp_path: Path, content: bytes, message: str) -> None:
    csv_path = tmp_path / "pairs.csv"
    csv_path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_pairs(csv_path)
