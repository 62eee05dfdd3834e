"""Paired restoration datasets on disk -> a sorted list of (degraded, clean) pairs.

`diffplugin eval plugin` measures a plugin against ground truth, so it needs each degraded image matched with
its clean original. Users download the public benchmarks in their published folder layouts; `load_pairs` reads
those layouts (or the official Diff-Plugin CSV) without asking anyone to convert them first.

The layouts follow the folder conventions the datasets' authors publish (CDD-11 from OneRestore, GoPro, LOL,
SHIQ, RESIDE SOTS, and the Rain100H/Rain100L/Test100/Rain13K/Snow100K test sets as laid out by MPRNet and
Restormer). They were tested on small folder trees built by the tests in that shape, not on the real downloads,
none of which can be downloaded here; a release that renames a folder will need a new rule.

Every pair gets a `name`: a relative, `/`-separated name without suffix that is unique within the dataset (case
folded, since output files are named after it and macOS and Windows file systems ignore case). Append the
suffix as a string (`f"{name}.png"`): SOTS names like `0001_0.8_0.2` contain dots, which `Path.with_suffix`
would take for a suffix. Pairs come back sorted by name, so runs over the same folder are comparable.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from plugins.data.pairs import CLEAN_COLUMN, DEGRADED_COLUMN, IMAGE_SUFFIXES, MAX_LISTED, read_pair_rows
from plugins.errors import DiffPluginError

#: The degradations CDD-11 combines; its degraded folders are named from these joined by "_".
CDD11_DEGRADATIONS = ("low", "haze", "rain", "snow")
#: (degraded folder, clean folder) names the generic paired-folders layout accepts.
PAIRED_FOLDER_NAMES = (("input", "target"), ("degraded", "clean"), ("synthetic", "gt"), ("moire", "clear"))
#: Name tags some sets put after the shared stem (AIM19 LCDMoire: 000123_moire.png + 000123_gt.png).
_STEM_TAGS = ("_moire", "_gt", "_clear")

#: layout name -> one-line description (shown by `--help` and docs)
LAYOUTS: dict[str, str] = {
    "csv": "official Diff-Plugin CSV with header image,conditioning_image (clean, degraded); paths relative to it",
    "cdd11": "CDD-11 (OneRestore): clear/ plus degradation folders such as low/, haze_rain/, low_haze_snow/",
    "gopro": "GoPro deblurring: <sequence>/blur/ (or blur_gamma/) and <sequence>/sharp/, e.g. GOPRO_Large/test",
    "lol": "LOL low-light: low/ and high/ with the same file names, e.g. LOLdataset/eval15",
    "shiq": "SHIQ specular highlights: NNNNN_A.png inputs and NNNNN_D.png ground truth in one folder",
    "sots": "RESIDE SOTS dehazing: hazy/ (0001_0.8_0.2.jpg) and gt/ or clear/ (0001.png)",
    "paired-folders": "input/ + target/ (Rain100H, Rain100L, Test100, Rain13K), degraded/ + clean/, "
    "synthetic/ + gt/ (Snow100K) or moire/ + clear/ (AIM19 LCDMoire), matched by file stem",
}

# Extracting a zip on macOS leaves this folder of "._" metadata files beside the real ones.
_JUNK_FOLDERS = frozenset({"__MACOSX"})
# Characters Windows refuses in file names; a name from a CSV path may carry them.
_UNSAFE = re.compile(r'[<>:"\\|?*\x00-\x1f]')


class DatasetError(DiffPluginError, ValueError):
    """A dataset folder or CSV that cannot be read as pairs; the message says where, what, and what to do."""


@dataclass(frozen=True)
class Pair:
    """One evaluation example: a degraded input and its clean ground truth."""

    name: str
    degraded: Path
    clean: Path
    degradations: tuple[str, ...] = ()


def load_pairs(source: Path, layout: str = "auto") -> list[Pair]:
    """Read the dataset at `source` in `layout` ("auto": `detect_layout`); pairs sorted by name.

    Raises `DatasetError` for an unknown layout, a folder that does not have the layout's structure, a degraded
    image without a clean match, a layout that finds no pairs, or names that would clash.
    """
    path = _checked_source(source)
    if layout == "auto":
        layout = detect_layout(path)
    loader = _LOADERS.get(layout)
    if loader is None:
        raise DatasetError(f"unknown dataset layout {layout!r}; choose 'auto' or one of:\n{_layout_list()}")
    pairs = loader(path)
    _check_unique(path, pairs)
    return sorted(pairs, key=lambda pair: pair.name)


def detect_layout(source: Path) -> str:
    """The layout "auto" resolves to for `source`; `DatasetError` listing `LAYOUTS` if none fits."""
    path = _checked_source(source)
    layout = _detect(path)
    if layout is None:
        raise DatasetError(
            f"{path}: no known dataset layout fits this folder ({_describe(path)}).{_hint(path)}\n"
            f"Point at the dataset folder itself or name the layout explicitly; known layouts:\n{_layout_list()}"
        )
    return layout


# ------------------------------------------------------------------------------------------- detection


def _detect(path: Path) -> str | None:
    """First layout whose structure `path` has, in the order the layouts' signatures are most specific."""
    if path.is_file():
        return "csv" if path.suffix.lower() == ".csv" else None
    folders = _subfolders(path)
    # A CSV that names its pairs outranks any folder guess: make_paired_dataset writes pairs.csv beside
    # clean/ + degraded/, whose stems differ ("a" vs "a_0") and would not match as paired folders.
    if len(_pair_csvs(path)) == 1:
        return "csv"
    if "clear" in folders and any(_is_combination(name) for name in folders):
        return "cdd11"
    if {"low", "high"} <= folders.keys():
        return "lol"
    if "hazy" in folders:
        return "sots"
    if any(image.stem.endswith("_A") for image in _images(path)):
        return "shiq"
    if any(_blur_folder(folder) is not None and (folder / "sharp").is_dir() for folder in folders.values()):
        return "gopro"
    if any({degraded, clean} <= folders.keys() for degraded, clean in PAIRED_FOLDER_NAMES):
        return "paired-folders"
    return None


def _hint(path: Path) -> str:
    """Suggest a subfolder when the user pointed one level too high (CDD-11/, GOPRO_Large/, LOLdataset/)."""
    if not path.is_dir():
        return ""
    folders = _subfolders(path)
    cdd = sorted(name for name in folders if name.startswith("CDD-11"))
    if len(cdd) == 1:
        return f" Did you mean {folders[cdd[0]]}?"
    if cdd:
        return f" Did you mean one of {', '.join(str(folders[name]) for name in cdd)}?"
    found = [(name, layout) for name, folder in sorted(folders.items()) if (layout := _detect(folder)) is not None]
    if not found:
        return ""
    listed = ", ".join(f"{folders[name]} ({layout})" for name, layout in found[:MAX_LISTED])
    return f" Subfolders that do fit a layout: {listed}{_more(len(found))}; did you mean one of those?"


def _pair_csvs(folder: Path) -> list[Path]:
    """CSV files directly in `folder` whose header names both pair columns."""
    return [candidate for candidate in _csv_files(folder) if _has_pair_header(candidate)]


def _has_pair_header(path: Path) -> bool:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    names = {cell.strip() for cell in header}
    return {CLEAN_COLUMN, DEGRADED_COLUMN} <= names


# ------------------------------------------------------------------------------------------------- csv


def _load_csv(source: Path) -> list[Pair]:
    path = _csv_in(source) if source.is_dir() else source
    try:
        rows = read_pair_rows(path)
    except ValueError as error:
        raise DatasetError(str(error)) from error
    folder = path.parent
    names = [_csv_name(folder, pair.degraded) for _, pair in rows]
    # Two rows may name the same degraded file (or a.png and a.jpg); the row number keeps their outputs apart.
    counts = Counter(name.casefold() for name in names)
    return [
        Pair(name=name if counts[name.casefold()] == 1 else f"{name}_row{row_number}", degraded=pair.degraded,
             clean=pair.clean)
        for name, (row_number, pair) in zip(names, rows, strict=True)
    ]


def _csv_in(folder: Path) -> Path:
    candidates = _csv_files(folder)
    if len(candidates) == 1:
        return candidates[0]
    with_header = _pair_csvs(folder)
    if len(with_header) == 1:
        return with_header[0]
    if not candidates:
        raise DatasetError(f"{folder}: no .csv file in this folder; point at the pairs CSV itself")
    listed = ", ".join(candidate.name for candidate in candidates)
    raise DatasetError(f"{folder}: several .csv files ({listed}); point at the one that lists the pairs")


def _csv_name(folder: Path, degraded: Path) -> str:
    """The degraded path relative to the CSV's folder, without suffix, made safe to name an output file."""
    try:
        relative = Path(os.path.relpath(degraded, folder))
    except ValueError:  # Windows: a path on another drive has no relative form
        relative = Path(*degraded.parts[1:])
    # ".." would put the output outside the output folder, so a path outside the CSV's folder drops it.
    parts = [_UNSAFE.sub("_", part) for part in relative.with_suffix("").parts if part not in ("..", ".")]
    return "/".join(parts) or "_"


# ------------------------------------------------------------------------------------------------ cdd11


def _load_cdd11(source: Path) -> list[Pair]:
    folders = _subfolders(source)
    combinations = sorted(name for name in folders if _is_combination(name))
    if "clear" not in folders or not combinations:
        missing = "clear/" if "clear" not in folders else "degradation folder (low/, haze_rain/, ...)"
        raise _structure_error(source, "cdd11", f"no {missing}; CDD-11 has clear/ (ground truth) beside "
                               f"folders named from {', '.join(CDD11_DEGRADATIONS)} joined by '_'")
    clean = folders["clear"]
    pairs: list[Pair] = []
    unmatched: list[str] = []
    for name in combinations:
        found, missing_clean = _match(folders[name], clean, _by_name, _by_name, prefix=f"{name}/",
                                      degradations=tuple(name.split("_")))
        pairs += found
        unmatched += [f"{name}/{image}" for image in missing_clean]
    _raise_unmatched(unmatched, clean, "a file of the same name")
    _require_pairs(pairs, "cdd11", [folders[name] for name in ("clear", *combinations)])
    return pairs


def _is_combination(name: str) -> bool:
    parts = name.split("_")
    return all(part in CDD11_DEGRADATIONS for part in parts) and len(set(parts)) == len(parts)


# ------------------------------------------------------------------------------------------------ gopro


def _blur_folder(sequence: Path) -> Path | None:
    # GoPro ships blur/ (averaged in gamma-corrected space); some copies keep only blur_gamma/.
    for name in ("blur", "blur_gamma"):
        if (sequence / name).is_dir():
            return sequence / name
    return None


def _load_gopro(source: Path) -> list[Pair]:
    sequences = {
        name: folder for name, folder in _subfolders(source).items()
        if _blur_folder(folder) is not None or (folder / "sharp").is_dir()
    }
    if not sequences:
        raise _structure_error(source, "gopro", "no sequence folders holding blur/ (or blur_gamma/) and sharp/; "
                               "point at e.g. GOPRO_Large/test")
    pairs: list[Pair] = []
    unmatched: list[str] = []
    looked: list[Path] = []
    for name, folder in sorted(sequences.items()):
        blur, sharp = _blur_folder(folder), folder / "sharp"
        if blur is None or not sharp.is_dir():
            lacking = "sharp/" if blur is not None else "blur/ (or blur_gamma/)"
            raise DatasetError(f"{folder}: this GoPro sequence has no {lacking}; restore it or remove the sequence")
        found, missing_clean = _match(blur, sharp, _by_name, _by_name, prefix=f"{name}/")
        pairs += found
        unmatched += [f"{name}/{blur.name}/{image}" for image in missing_clean]
        looked += [blur, sharp]
    _raise_unmatched(unmatched, source, "a file of the same name in its sequence's sharp/")
    _require_pairs(pairs, "gopro", looked)
    return pairs


# -------------------------------------------------------------------------------------------------- lol


def _load_lol(source: Path) -> list[Pair]:
    low, high = _required_folders(source, "lol", ("low", "high"))
    found, unmatched = _match(low, high, _by_name, _by_name)
    _raise_unmatched(unmatched, high, "a file of the same name")
    _require_pairs(found, "lol", [low, high])
    return found


# ------------------------------------------------------------------------------------------------- shiq


def _load_shiq(source: Path) -> list[Pair]:
    images = _images(source)
    inputs = [image for image in images if image.stem.endswith("_A")]
    clean = _by_key([image for image in images if image.stem.endswith("_D")], lambda image: image.stem[:-2])
    pairs: list[Pair] = []
    unmatched: list[str] = []
    for image in inputs:
        number = image.stem[:-2]
        match = _single(clean, number, image)
        if match is None:
            unmatched.append(image.name)
        else:
            pairs.append(Pair(name=number, degraded=image, clean=match))
    _raise_unmatched(unmatched, source, "a ground truth NNNNN_D file of the same number")
    if not pairs:
        raise DatasetError(f"{source}: no SHIQ inputs (files named NNNNN_A.png) in this folder "
                           f"({_describe(source)}); point at the folder holding the _A/_D images")
    return pairs


# ------------------------------------------------------------------------------------------------- sots


def _load_sots(source: Path) -> list[Pair]:
    folders = _subfolders(source)
    clean_names = [name for name in ("gt", "clear") if name in folders]
    if "hazy" not in folders or not clean_names:
        missing = "hazy/" if "hazy" not in folders else "gt/ or clear/"
        raise _structure_error(source, "sots", f"no {missing}; SOTS has hazy/ beside gt/ (or clear/)")
    if len(clean_names) > 1:
        raise DatasetError(f"{source}: both gt/ and clear/ are present, so the ground truth is ambiguous; "
                           "remove or rename one of them")
    hazy, clean = folders["hazy"], folders[clean_names[0]]
    # 0001_0.8_0.2.jpg is image 0001 hazed with atmospheric light 0.8 and scattering 0.2.
    found, unmatched = _match(hazy, clean, lambda image: image.stem.split("_")[0], _by_stem)
    _raise_unmatched(unmatched, clean, "a file whose stem is the hazy name before the first '_'")
    _require_pairs(found, "sots", [hazy, clean])
    return found


# ---------------------------------------------------------------------------------------- paired-folders


def _load_paired_folders(source: Path) -> list[Pair]:
    folders = _subfolders(source)
    present = [(degraded, clean) for degraded, clean in PAIRED_FOLDER_NAMES if {degraded, clean} <= folders.keys()]
    if len(present) > 1:
        listed = " and ".join(f"{degraded}/ + {clean}/" for degraded, clean in present)
        raise DatasetError(f"{source}: holds both {listed}, so which pairs to read is ambiguous; "
                           "point at a folder with just one of them")
    if not present:
        halves = [f"{name}/ without {other}/" for degraded, clean in PAIRED_FOLDER_NAMES
                  for name, other in ((degraded, clean), (clean, degraded)) if name in folders]
        expected = ", ".join(f"{degraded}/ + {clean}/" for degraded, clean in PAIRED_FOLDER_NAMES)
        found = f"found {', '.join(halves)}" if halves else "none of them is here"
        raise _structure_error(source, "paired-folders", f"expected one of {expected}; {found}")
    degraded, clean = (folders[name] for name in present[0])
    pairs, unmatched = _match(degraded, clean, _by_tagged_stem, _by_tagged_stem)
    _raise_unmatched(unmatched, clean, "a file with the same stem (any image suffix)")
    _require_pairs(pairs, "paired-folders", [degraded, clean])
    return pairs


_LOADERS: dict[str, Callable[[Path], list[Pair]]] = {
    "csv": _load_csv,
    "cdd11": _load_cdd11,
    "gopro": _load_gopro,
    "lol": _load_lol,
    "shiq": _load_shiq,
    "sots": _load_sots,
    "paired-folders": _load_paired_folders,
}


# -------------------------------------------------------------------------------------------- matching


def _by_name(image: Path) -> str:
    return image.name


def _by_stem(image: Path) -> str:
    return image.stem


def _by_tagged_stem(image: Path) -> str:
    stem = image.stem
    for tag in _STEM_TAGS:
        if stem.endswith(tag):
            return stem[: -len(tag)]
    return stem


def _by_key(images: list[Path], key: Callable[[Path], str]) -> dict[str, list[Path]]:
    grouped: dict[str, list[Path]] = defaultdict(list)
    for image in images:
        grouped[key(image)].append(image)
    return grouped


def _single(clean: dict[str, list[Path]], key: str, degraded: Path) -> Path | None:
    candidates = clean.get(key, [])
    if len(candidates) > 1:
        listed = ", ".join(candidate.name for candidate in candidates)
        raise DatasetError(f"{candidates[0].parent}: {listed} could all be the ground truth of {degraded.name}; "
                           "keep only one of them")
    return candidates[0] if candidates else None


def _match(degraded_dir: Path, clean_dir: Path, degraded_key: Callable[[Path], str],
           clean_key: Callable[[Path], str], prefix: str = "",
           degradations: tuple[str, ...] = ()) -> tuple[list[Pair], list[str]]:
    """Pairs for the images in `degraded_dir` whose key finds one clean image, and the names that found none."""
    clean = _by_key(_images(clean_dir), clean_key)
    pairs: list[Pair] = []
    unmatched: list[str] = []
    for image in _images(degraded_dir):
        match = _single(clean, degraded_key(image), image)
        if match is None:
            unmatched.append(image.name)
        else:
            pairs.append(Pair(name=prefix + image.stem, degraded=image, clean=match, degradations=degradations))
    return pairs, unmatched


def _raise_unmatched(unmatched: list[str], clean_dir: Path, rule: str) -> None:
    if not unmatched:
        return
    listed = ", ".join(unmatched[:MAX_LISTED]) + _more(len(unmatched))
    raise DatasetError(
        f"{clean_dir}: {len(unmatched)} degraded image(s) have no clean match ({rule}): {listed}. "
        "Add the missing ground truth or remove those degraded images."
    )


def _require_pairs(pairs: list[Pair], layout: str, looked: list[Path]) -> None:
    if pairs:
        return
    counts = ", ".join(f"{folder} ({len(_images(folder))} images)" for folder in looked)
    raise DatasetError(f"{layout}: found no image pairs; looked in {counts} for files ending in "
                       f"{', '.join(sorted(IMAGE_SUFFIXES))}. Check that the dataset was fully extracted.")


def _check_unique(source: Path, pairs: list[Pair]) -> None:
    counts = Counter(pair.name.casefold() for pair in pairs)
    clashes = sorted({pair.name for pair in pairs if counts[pair.name.casefold()] > 1})
    if clashes:
        listed = ", ".join(clashes[:MAX_LISTED]) + _more(len(clashes))
        raise DatasetError(f"{source}: several degraded images share the name {listed} (the same stem with "
                           "another suffix or letter case); their outputs would overwrite each other, so rename "
                           "or remove the duplicates")


# ---------------------------------------------------------------------------------------------- folders


def _checked_source(source: Path) -> Path:
    path = Path(source).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"{path} does not exist; point at the dataset folder or its pairs CSV")
    if path.is_file() and path.suffix.lower() != ".csv":
        raise DatasetError(f"{path} is a file but not a .csv; point at the dataset folder or its pairs CSV")
    return path


def _visible(entry: Path) -> bool:
    # Dot files are skipped: macOS leaves "._name.png" metadata files that carry image suffixes.
    return not entry.name.startswith(".") and entry.name not in _JUNK_FOLDERS


def _subfolders(folder: Path) -> dict[str, Path]:
    return {entry.name: entry for entry in folder.iterdir() if entry.is_dir() and _visible(entry)}


def _images(folder: Path) -> list[Path]:
    return sorted(
        entry for entry in folder.iterdir()
        if entry.is_file() and _visible(entry) and entry.suffix.lower() in IMAGE_SUFFIXES
    )


def _csv_files(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir()
                  if entry.is_file() and _visible(entry) and entry.suffix.lower() == ".csv")


def _required_folders(source: Path, layout: str, names: tuple[str, ...]) -> list[Path]:
    folders = _subfolders(source)
    missing = [name for name in names if name not in folders]
    if missing:
        wanted = " and ".join(f"{name}/" for name in names)
        raise _structure_error(source, layout, f"no {', '.join(f'{name}/' for name in missing)}; "
                               f"{layout} expects {wanted}")
    return [folders[name] for name in names]


def _structure_error(source: Path, layout: str, problem: str) -> DatasetError:
    return DatasetError(f"{source}: not a {layout} dataset: {problem} (found {_describe(source)}).{_hint(source)}")


def _describe(folder: Path) -> str:
    if not folder.is_dir():
        return "a file"
    names = sorted(_subfolders(folder))
    shown = ", ".join(f"{name}/" for name in names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    images = len(_images(folder))
    return f"subfolders {shown}; {images} image file(s)" if names else f"no subfolders; {images} image file(s)"


def _more(total: int) -> str:
    return f" and {total - MAX_LISTED} more" if total > MAX_LISTED else ""


def _layout_list() -> str:
    return "\n".join(f"  {name}: {description}" for name, description in LAYOUTS.items())
