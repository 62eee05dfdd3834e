"""Paired (clean, degraded) datasets in the official Diff-Plugin CSV format.

The CSV has the header `image,conditioning_image` (either order): `image` is the clean ground truth and
`conditioning_image` the degraded input. Paths are written relative to the CSV's folder, with `/` separators,
so a dataset folder can be moved or shared as a whole; absolute paths are accepted when reading.
"""

from __future__ import annotations

import csv
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from plugins.data.degradations import degrade, validate_names
from plugins.data.photos import load_photo

CLEAN_COLUMN = "image"
DEGRADED_COLUMN = "conditioning_image"
PAIRS_FILE = "pairs.csv"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class Pair:
    """One training example: the clean ground truth and its degraded version."""

    clean: Path
    degraded: Path


# ---------------------------------------------------------------------------------------------- reading


def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Read a pairs CSV; paths come back absolute and are checked to exist.

    Raises `ValueError` naming the file and line for an empty file, a header without both columns, a row
    without a value, a missing image file, or a header with no rows below it.
    """
    path = Path(csv_path)
    folder = path.absolute().parent
    # utf-8-sig: spreadsheet programs often save CSVs with a byte-order mark that would corrupt the header.
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise ValueError(f"{path}: line 1: empty; expected the header '{CLEAN_COLUMN},{DEGRADED_COLUMN}'")
        clean_index, degraded_index = _column_indices(path, header)
        pairs = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            clean = _existing_file(path, line, folder, row, clean_index, CLEAN_COLUMN)
            degraded = _existing_file(path, line, folder, row, degraded_index, DEGRADED_COLUMN)
            pairs.append(Pair(clean=clean, degraded=degraded))
    if not pairs:
        raise ValueError(f"{path}: no pairs below the header")
    return pairs


def _column_indices(path: Path, header: list[str]) -> tuple[int, int]:
    names = [cell.strip() for cell in header]
    missing = [column for column in (CLEAN_COLUMN, DEGRADED_COLUMN) if column not in names]
    if missing:
        raise ValueError(
            f"{path}: line 1: header lacks column(s) {', '.join(missing)}; expected "
            f"'{CLEAN_COLUMN},{DEGRADED_COLUMN}' (in either order), found '{','.join(names)}'"
        )
    return names.index(CLEAN_COLUMN), names.index(DEGRADED_COLUMN)


def _existing_file(path: Path, line: int, folder: Path, row: list[str], index: int, column: str) -> Path:
    value = row[index].strip() if index < len(row) else ""
    if not value:
        raise ValueError(f"{path}: line {line}: no {column} path")
    candidate = Path(value)
    resolved = candidate if candidate.is_absolute() else folder / candidate
    if not resolved.is_file():
        raise ValueError(f"{path}: line {line}: {column} file not found: {value} (looked for {resolved})")
    return resolved


# ---------------------------------------------------------------------------------------------- writing


def write_pairs(csv_path: str | Path, pairs: Iterable[Pair]) -> None:
    """Write the header and the pairs, paths relative to the CSV's folder with `/` separators.

    Writes to a temporary file and renames it, so an existing CSV is never left half-written.
    """
    path = Path(csv_path)
    folder = path.absolute().parent
    rows = [(_relative(folder, pair.clean), _relative(folder, pair.degraded)) for pair in pairs]
    folder.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([CLEAN_COLUMN, DEGRADED_COLUMN])
        writer.writerows(rows)
    os.replace(temporary, path)


def _relative(folder: Path, target: Path) -> str:
    absolute = Path(target).absolute()
    try:
        return Path(os.path.relpath(absolute, folder)).as_posix()
    except ValueError:  # Windows: on another drive there is no relative path
        return absolute.as_posix()


# ------------------------------------------------------------------------------------------ generating


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in `folder` (by suffix, case-insensitive), sorted by name."""
    directory = Path(folder)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a folder")
    # Dot files are skipped: macOS leaves "._name.jpg" metadata files that carry image suffixes.
    return sorted(
        entry
        for entry in directory.iterdir()
        if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")
    )


def make_paired_dataset(
    clean_dir: str | Path,
    out_dir: str | Path,
    degradations: Sequence[str],
    seed: int = 0,
    per_image: int = 1,
    strength: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Build a paired dataset from a folder of clean images; return the path of its `pairs.csv`.

    Each image is copied unchanged to `out_dir/clean/`, and `per_image` degraded versions (the degradations
    applied in order, each version from its own seed) go to `out_dir/degraded/<stem>_<k>.png`. `pairs.csv` is
    written last, so its presence marks a finished dataset. `progress(done, total)` is called after each image.
    """
    names = validate_names(degradations)
    if not names:
        raise ValueError("give at least one degradation")
    if per_image < 1:
        raise ValueError(f"per_image must be at least 1, got {per_image}")
    if not strength >= 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    target = Path(out_dir)
    _refuse_existing(target)
    images = list_images(clean_dir)
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ValueError(f"{clean_dir} holds no images (looked for {suffixes})")
    stems = _output_stems(images)
    clean_out, degraded_out = target / "clean", target / "degraded"
    clean_out.mkdir(parents=True, exist_ok=True)
    degraded_out.mkdir(parents=True, exist_ok=True)
    pairs: list[Pair] = []
    for done, (source, stem) in enumerate(zip(images, stems, strict=True), start=1):
        clean = clean_out / source.name
        shutil.copy2(source, clean)
        for k, degraded in enumerate(_degraded_versions(source, names, seed, per_image, strength)):
            degraded_path = degraded_out / f"{stem}_{k}.png"
            degraded.save(degraded_path)
            pairs.append(Pair(clean=clean, degraded=degraded_path))
        if progress is not None:
            progress(done, len(images))
    csv_path = target / PAIRS_FILE
    write_pairs(csv_path, pairs)
    return csv_path


def _refuse_existing(target: Path) -> None:
    """Never overwrite a user's data: a finished dataset, or files left by an interrupted run."""
    csv_path = target / PAIRS_FILE
    if csv_path.exists():
        raise FileExistsError(
            f"{csv_path} already exists; refusing to overwrite a dataset. Choose another output folder or delete it."
        )
    for sub in (target / "clean", target / "degraded"):
        if sub.is_dir() and any(sub.iterdir()):
            raise FileExistsError(
                f"{sub} already holds files (an interrupted run?); refusing to overwrite them. "
                "Choose another output folder or empty it."
            )


def _output_stems(images: list[Path]) -> list[str]:
    """Stems for the degraded files; images sharing a stem (a.png, a.jpg) keep their suffix to stay apart."""
    shared = Counter(image.stem.casefold() for image in images)
    stems = [image.stem if shared[image.stem.casefold()] == 1 else image.name for image in images]
    # Case-folded because a case-insensitive file system would merge "A_0.png" and "a_0.png".
    clashes = sorted(stem for stem, count in Counter(stem.casefold() for stem in stems).items() if count > 1)
    if clashes:
        raise ValueError(f"images would share degraded file names: {', '.join(clashes)}; rename them")
    return stems


def _degraded_versions(
    source: Path, names: list[str], seed: int, per_image: int, strength: float
) -> Iterable[Image.Image]:
    image = load_photo(source)  # upright, like every loader of these pairs (the clean copy keeps its EXIF tag)
    for k in range(per_image):
        yield degrade(image, names, seed=_derived_seed(seed, source.name, k), strength=strength)


def _derived_seed(seed: int, name: str, k: int) -> int:
    """Seed from the file name rather than its position, so adding images leaves the others unchanged."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8")), k]).generate_state(1)[0])
