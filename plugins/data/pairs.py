"""Paired (clean, degraded) datasets in the official Diff-Plugin CSV format.

The CSV has the header `image,conditioning_image` (either order): `image` is the clean ground truth and
`conditioning_image` the degraded input. Paths are written relative to the CSV's folder, with `/` separators,
so a dataset folder can be moved or shared as a whole; absolute paths are accepted when reading.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from plugins.atomic_files import write_atomic
from plugins.data.degradations import degrade, validate_names
from plugins.data.photos import load_photo
from plugins.errors import BadInput, FileInTheWay
from plugins.progress import Progress, ProgressEvent

CLEAN_COLUMN = "image"
DEGRADED_COLUMN = "conditioning_image"
PAIRS_FILE = "pairs.csv"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
#: How many offending rows or files an error lists before summarising the rest.
MAX_LISTED = 5


@dataclass(frozen=True)
class Pair:
    """One training example: the clean ground truth and its degraded version."""

    clean: Path
    degraded: Path


# ---------------------------------------------------------------------------------------------- reading


def read_pairs(csv_path: str | Path) -> list[Pair]:
    """Read a pairs CSV; paths come back absolute and are checked to exist. Errors as `read_pair_rows`."""
    return [pair for _, pair in read_pair_rows(csv_path)]


def read_pair_rows(csv_path: str | Path) -> list[tuple[int, Pair]]:
    """Read a pairs CSV into (row number, pair), counting rows as a spreadsheet does (the header is row 1).

    Raises `ValueError` naming the file for text that is not UTF-8 or not readable as CSV, an empty file, a
    header without both columns or naming one twice, or a header with no rows below it. Rows without a value
    or naming a missing image file are all listed in one error (up to `MAX_LISTED`, then a count), so a user
    fixes a broken CSV in one pass rather than one row per run.
    """
    path = Path(csv_path)
    folder = path.absolute().parent
    try:
        # utf-8-sig: spreadsheet programs often save CSVs with a byte-order mark that would corrupt the header.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            # Blank rows still count, so the numbers match what a spreadsheet shows.
            rows = list(enumerate(csv.reader(handle), start=1))
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text ({error.reason}); save the CSV as UTF-8") from error
    except csv.Error as error:
        raise BadInput(f"{path}: not a readable CSV ({error}); check its quoting") from error
    if not rows or not any(cell.strip() for cell in rows[0][1]):
        raise BadInput(f"{path}: the file is empty; its first row must be the header "
                         f"'{CLEAN_COLUMN},{DEGRADED_COLUMN}' (clean, degraded)")
    clean_index, degraded_index = _column_indices(path, rows[0][1])
    body = [(row_number, row) for row_number, row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise BadInput(f"{path}: no pairs below the header; add one row per pair (clean path, degraded path)")
    problems: list[str] = []
    found: list[tuple[int, Pair]] = []
    for row_number, row in body:
        clean = _existing_file(folder, row_number, row, clean_index, CLEAN_COLUMN, "clean", problems)
        degraded = _existing_file(folder, row_number, row, degraded_index, DEGRADED_COLUMN, "degraded", problems)
        if clean is not None and degraded is not None:
            found.append((row_number, Pair(clean=clean, degraded=degraded)))
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise BadInput(
            f"{path}: {len(problems)} problem(s) with the image paths (relative paths are read from {folder}; "
            f"row numbers count the header as row 1):\n  " + "\n  ".join(problems[:MAX_LISTED]) + more
            + "\nFix those paths or delete the rows."
        )
    return found


def _column_indices(path: Path, header: list[str]) -> tuple[int, int]:
    names = [cell.strip() for cell in header]
    missing = [column for column in (CLEAN_COLUMN, DEGRADED_COLUMN) if column not in names]
    if missing:
        raise BadInput(
            f"{path}: row 1: the header lacks column(s) {', '.join(missing)}; found '{','.join(names)}'. "
            f"Make the first row '{CLEAN_COLUMN},{DEGRADED_COLUMN}' ({CLEAN_COLUMN} = clean ground truth, "
            f"{DEGRADED_COLUMN} = degraded input; either order)"
        )
    doubled = sorted(column for column in (CLEAN_COLUMN, DEGRADED_COLUMN) if names.count(column) > 1)
    if doubled:
        raise BadInput(f"{path}: row 1: the header names {', '.join(doubled)} more than once; keep one of each")
    return names.index(CLEAN_COLUMN), names.index(DEGRADED_COLUMN)


def _existing_file(folder: Path, row_number: int, row: list[str], index: int, column: str, role: str,
                   problems: list[str]) -> Path | None:
    value = row[index].strip() if index < len(row) else ""
    if not value:
        problems.append(f"row {row_number}: no {column} ({role}) path")
        return None
    candidate = Path(value).expanduser()
    resolved = candidate if candidate.is_absolute() else folder / candidate
    if not resolved.is_file():
        problems.append(f"row {row_number}: {column} ({role}) file not found: {value}")
        return None
    return resolved


# ---------------------------------------------------------------------------------------------- writing


def write_pairs(csv_path: str | Path, pairs: Iterable[Pair]) -> None:
    """Write the header and the pairs, paths relative to the CSV's folder with `/` separators.

    Written atomically, so an existing CSV is never left half-written.
    """
    path = Path(csv_path)
    folder = path.absolute().parent
    rows = [(_relative(folder, pair.clean), _relative(folder, pair.degraded)) for pair in pairs]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([CLEAN_COLUMN, DEGRADED_COLUMN])
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode("utf-8"))


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
    progress: Progress | None = None,
) -> Path:
    """Build a paired dataset from a folder of clean images; return the path of its `pairs.csv`.

    Each image is copied unchanged to `out_dir/clean/`, and `per_image` degraded versions (the degradations
    applied in order, each version from its own seed) go to `out_dir/degraded/<stem>_<k>.png`. `pairs.csv` is
    written last, so its presence marks a finished dataset. `progress` hears of each image done ('degrade').
    """
    names = validate_names(degradations)
    if not names:
        raise BadInput("give at least one degradation")
    if per_image < 1:
        raise BadInput(f"per_image must be at least 1, got {per_image}")
    if not strength >= 0:
        raise BadInput(f"strength must be >= 0, got {strength}")
    target = Path(out_dir)
    _refuse_existing(target)
    images = list_images(clean_dir)
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise BadInput(f"{clean_dir} holds no images (looked for {suffixes})")
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
            progress(ProgressEvent("degrade", done, len(images), source.name))
    csv_path = target / PAIRS_FILE
    write_pairs(csv_path, pairs)
    return csv_path


def _refuse_existing(target: Path) -> None:
    """Never overwrite a user's data: a finished dataset, or files left by an interrupted run."""
    csv_path = target / PAIRS_FILE
    if csv_path.exists():
        raise FileInTheWay(
            f"{csv_path} already exists; refusing to overwrite a dataset. Choose another output folder or delete it."
        )
    for sub in (target / "clean", target / "degraded"):
        if sub.is_dir() and any(sub.iterdir()):
            raise FileInTheWay(
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
        raise BadInput(f"images would share degraded file names: {', '.join(clashes)}; rename them")
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
