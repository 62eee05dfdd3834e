"""Dataset loaders for plugin evaluation, on tiny trees shaped like each dataset's published layout."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from assistant.evaluation.datasets import LAYOUTS, DatasetError, Pair, detect_layout, load_pairs


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


# Encoded once: the loaders never decode pixels, so every file can share the same small real image.
PNG, JPEG = _encoded("PNG"), _encoded("JPEG")


def put(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JPEG if path.suffix.lower() in (".jpg", ".jpeg") else PNG)
    return path


def put_all(folder: Path, names: list[str]) -> None:
    for name in names:
        put(folder / name)


def names_of(pairs: list[Pair]) -> list[str]:
    return [pair.name for pair in pairs]


# ---------------------------------------------------------------------------------------------- builders


def make_csv_dataset(root: Path) -> Path:
    put_all(root / "clean", ["a.png", "b.png"])
    put_all(root / "degraded", ["a_0.png", "b_0.png"])
    (root / "pairs.csv").write_text("image,conditioning_image\nclean/b.png,degraded/b_0.png\n"
                                    "clean/a.png,degraded/a_0.png\n")
    return root


def make_cdd11(root: Path) -> Path:
    put_all(root / "clear", ["000001.png", "000002.png"])
    for folder in ("low", "haze_rain", "low_haze_snow"):
        put_all(root / folder, ["000001.png", "000002.png"])
    return root


def make_gopro(root: Path) -> Path:
    for sequence in ("GOPR0384_11_00", "GOPR0862_11_00"):
        put_all(root / sequence / "blur", ["000001.png", "000002.png"])
        put_all(root / sequence / "sharp", ["000001.png", "000002.png"])
    return root


def make_lol(root: Path) -> Path:
    put_all(root / "low", ["1.png", "22.png"])
    put_all(root / "high", ["1.png", "22.png"])
    return root


def make_shiq(root: Path) -> Path:
    for number in ("00000", "00001"):
        put_all(root, [f"{number}_A.png", f"{number}_D.png", f"{number}_S.png", f"{number}_T.png"])
    return root


def make_sots(root: Path) -> Path:
    put_all(root / "hazy", ["0001_0.8_0.2.jpg", "0001_0.9_0.16.jpg", "0002_0.8_0.2.jpg"])
    put_all(root / "gt", ["0001.png", "0002.png"])
    return root


def make_rain(root: Path) -> Path:
    put_all(root / "input", ["1.png", "2.png"])
    put_all(root / "target", ["1.png", "2.png"])
    return root


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "csv": make_csv_dataset,
    "cdd11": make_cdd11,
    "gopro": make_gopro,
    "lol": make_lol,
    "shiq": make_shiq,
    "sots": make_sots,
    "paired-folders": make_rain,
}


# ------------------------------------------------------------------------------------------- detection


def test_every_layout_has_a_builder_and_a_description() -> None:
    assert set(BUILDERS) == set(LAYOUTS)
    assert all(description and "\n" not in description for description in LAYOUTS.values())


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_auto_detects_every_layout_and_loads_the_same_pairs(tmp_path: Path, layout: str) -> None:
    root = BUILDERS[layout](tmp_path / "data")
    assert detect_layout(root) == layout
    auto = load_pairs(root)
    assert auto == load_pairs(root, layout)
    assert len(auto) >= 2
    assert names_of(auto) == sorted(names_of(auto))
    for pair in auto:
        assert pair.degraded.is_file() and pair.clean.is_file() and pair.degraded != pair.clean
        assert pair.degraded.is_absolute() and pair.clean.is_absolute()


def test_csv_file_itself_is_detected_as_csv(tmp_path: Path) -> None:
    root = make_csv_dataset(tmp_path)
    assert detect_layout(root / "pairs.csv") == "csv"


def test_folder_pairs_csv_outranks_its_clean_and_degraded_folders(tmp_path: Path) -> None:
    # A make_paired_dataset output: degraded stems ("a_0") differ from clean ones, so only the CSV pairs them.
    root = make_csv_dataset(tmp_path)
    assert detect_layout(root) == "csv"
    with pytest.raises(DatasetError, match="no clean match"):
        load_pairs(root, "paired-folders")


def test_no_layout_fits_lists_the_layouts(tmp_path: Path) -> None:
    put_all(tmp_path / "photos", ["x.png"])
    with pytest.raises(DatasetError) as caught:
        detect_layout(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "photos/" in message
    assert all(name in message for name in LAYOUTS)


def test_a_folder_one_level_too_high_suggests_its_subfolders(tmp_path: Path) -> None:
    make_gopro(tmp_path / "GOPRO_Large" / "test")
    make_gopro(tmp_path / "GOPRO_Large" / "train")
    with pytest.raises(DatasetError, match=r"did you mean") as caught:
        load_pairs(tmp_path / "GOPRO_Large")
    assert str(tmp_path / "GOPRO_Large" / "test") + " (gopro)" in str(caught.value)
    assert str(tmp_path / "GOPRO_Large" / "train") + " (gopro)" in str(caught.value)


def test_unknown_layout_and_missing_source(tmp_path: Path) -> None:
    root = make_lol(tmp_path)
    with pytest.raises(DatasetError, match=r"unknown dataset layout 'rain100'(.|\n)*paired-folders"):
        load_pairs(root, "rain100")
    with pytest.raises(DatasetError, match="does not exist"):
        load_pairs(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"is a file but not a \.csv"):
        detect_layout(root / "low" / "1.png")


# ------------------------------------------------------------------------------------------------- csv


def test_csv_reversed_columns_extra_columns_and_absolute_paths(tmp_path: Path) -> None:
    root = tmp_path / "set"
    put_all(root / "gt", ["a.png", "b.jpg"])
    put_all(root / "rain", ["a.png", "b.jpg"])
    elsewhere = put(tmp_path / "other" / "c.png")
    elsewhere_clean = put(tmp_path / "other" / "c_gt.png")
    csv_path = root / "pairs.csv"
    csv_path.write_text(
        "conditioning_image,note,image\n"
        "rain/b.jpg,x,gt/b.jpg\n"
        "\n"
        f"{elsewhere},y,{elsewhere_clean}\n"
        f"{root / 'rain' / 'a.png'},z,gt/a.png\n"
    )
    pairs = load_pairs(csv_path)
    assert names_of(pairs) == ["other/c", "rain/a", "rain/b"]
    by_name = {pair.name: pair for pair in pairs}
    assert by_name["rain/b"].degraded == root / "rain" / "b.jpg" and by_name["rain/b"].clean == root / "gt" / "b.jpg"
    assert by_name["rain/a"].clean == root / "gt" / "a.png"
    assert by_name["other/c"].degraded == elsewhere and by_name["other/c"].clean == elsewhere_clean
    assert all(pair.degradations == () for pair in pairs)


def test_csv_with_a_byte_order_mark_and_given_as_its_folder(tmp_path: Path) -> None:
    put_all(tmp_path, ["c.png", "d.png"])
    (tmp_path / "list.csv").write_text("\ufeffimage,conditioning_image\nc.png,d.png\n", encoding="utf-8")
    assert load_pairs(tmp_path, "csv") == [Pair(name="d", degraded=tmp_path / "d.png", clean=tmp_path / "c.png")]


def test_csv_repeated_degraded_file_gets_row_numbers(tmp_path: Path) -> None:
    put_all(tmp_path, ["c1.png", "c2.png", "d.png", "e.png"])
    (tmp_path / "pairs.csv").write_text("image,conditioning_image\nc1.png,d.png\nc2.png,d.png\nc1.png,e.png\n")
    assert names_of(load_pairs(tmp_path / "pairs.csv")) == ["d_row2", "d_row3", "e"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"pairs\.csv: the file is empty; its first row must be the header 'image,conditioning_image'"),
        ("image,degraded\nc.png,d.png\n",
         r"row 1: the header lacks column\(s\) conditioning_image; found 'image,degraded'"),
        ("clean,conditioning_image\n", r"header lacks column\(s\) image"),
        ("image,conditioning_image\n\n", "no pairs below the header"),
        ("image,image,conditioning_image\nc.png,c.png,d.png\n", "names image more than once"),
    ],
)
def test_csv_header_errors(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "pairs.csv").write_text(text)
    with pytest.raises(DatasetError, match=expected):
        load_pairs(tmp_path / "pairs.csv")


def test_csv_missing_files_name_rows_and_paths_up_to_five(tmp_path: Path) -> None:
    put(tmp_path / "c.png")
    rows = [f"c.png,gone{k}.png" for k in range(7)] + ["lost.png,", ""]
    (tmp_path / "pairs.csv").write_text("image,conditioning_image\n" + "\n".join(rows) + "\n")
    with pytest.raises(DatasetError) as caught:
        load_pairs(tmp_path / "pairs.csv")
    message = str(caught.value)
    assert f"{tmp_path / 'pairs.csv'}: 9 problem(s)" in message
    assert "row 2: conditioning_image (degraded) file not found: gone0.png" in message
    assert "row 6: conditioning_image (degraded) file not found: gone4.png" in message
    assert "gone5.png" not in message
    assert "\n  ... and 4 more\n" in message
    assert "Fix those paths" in message


def test_csv_row_without_a_value_is_reported(tmp_path: Path) -> None:
    put(tmp_path / "d.png")
    (tmp_path / "pairs.csv").write_text("conditioning_image,image\nd.png\n")
    with pytest.raises(DatasetError, match=r"row 2: no image \(clean\) path"):
        load_pairs(tmp_path / "pairs.csv")


def test_csv_folder_with_several_csv_files_asks_which(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x\n")
    (tmp_path / "b.csv").write_text("y\n")
    with pytest.raises(DatasetError, match=r"several \.csv files \(a\.csv, b\.csv\)"):
        load_pairs(tmp_path, "csv")


# ----------------------------------------------------------------------------------------------- cdd11


def test_cdd11_names_and_degradations(tmp_path: Path) -> None:
    pairs = load_pairs(make_cdd11(tmp_path))
    assert names_of(pairs) == [
        "haze_rain/000001", "haze_rain/000002", "low/000001", "low/000002",
        "low_haze_snow/000001", "low_haze_snow/000002",
    ]
    by_name = {pair.name: pair for pair in pairs}
    assert by_name["haze_rain/000002"].degradations == ("haze", "rain")
    assert by_name["low/000001"].degradations == ("low",)
    assert by_name["low_haze_snow/000001"].degradations == ("low", "haze", "snow")
    assert by_name["low_haze_snow/000001"].clean == tmp_path / "clear" / "000001.png"
    assert by_name["low_haze_snow/000001"].degraded == tmp_path / "low_haze_snow" / "000001.png"


def test_cdd11_parent_folder_suggests_the_split(tmp_path: Path) -> None:
    make_cdd11(tmp_path / "CDD-11_test")
    expected = f"Did you mean {tmp_path / 'CDD-11_test'}?"
    with pytest.raises(DatasetError) as by_layout:
        load_pairs(tmp_path, "cdd11")
    assert expected in str(by_layout.value) and "no clear/" in str(by_layout.value)
    with pytest.raises(DatasetError) as by_auto:
        load_pairs(tmp_path)
    assert expected in str(by_auto.value)


def test_cdd11_unmatched_and_missing_folders(tmp_path: Path) -> None:
    root = make_cdd11(tmp_path / "cdd")
    put(root / "haze_rain" / "000009.png")
    with pytest.raises(DatasetError, match=r"1 degraded image\(s\) have no clean match .*: haze_rain/000009\.png"):
        load_pairs(root)
    only_clear = tmp_path / "clear_only"
    put(only_clear / "clear" / "000001.png")
    with pytest.raises(DatasetError, match=r"not a cdd11 dataset: no degradation folder \(low/"):
        load_pairs(only_clear, "cdd11")


# ----------------------------------------------------------------------------------------------- gopro


def test_gopro_names_and_blur_gamma_fallback(tmp_path: Path) -> None:
    root = make_gopro(tmp_path)
    put_all(tmp_path / "GOPR0410_11_00" / "blur_gamma", ["000001.png"])
    put_all(tmp_path / "GOPR0410_11_00" / "sharp", ["000001.png"])
    pairs = load_pairs(root, "gopro")
    assert names_of(pairs) == [
        "GOPR0384_11_00/000001", "GOPR0384_11_00/000002", "GOPR0410_11_00/000001",
        "GOPR0862_11_00/000001", "GOPR0862_11_00/000002",
    ]
    gamma = next(pair for pair in pairs if pair.name == "GOPR0410_11_00/000001")
    assert gamma.degraded == tmp_path / "GOPR0410_11_00" / "blur_gamma" / "000001.png"
    assert gamma.clean == tmp_path / "GOPR0410_11_00" / "sharp" / "000001.png"


def test_gopro_prefers_blur_over_blur_gamma(tmp_path: Path) -> None:
    root = make_gopro(tmp_path)
    put_all(root / "GOPR0384_11_00" / "blur_gamma", ["000001.png", "000002.png"])
    pairs = load_pairs(root)
    assert all(pair.degraded.parent.name == "blur" for pair in pairs)


def test_gopro_sequence_without_sharp_is_an_error(tmp_path: Path) -> None:
    root = make_gopro(tmp_path)
    put(root / "GOPR0999_11_00" / "blur" / "000001.png")
    with pytest.raises(DatasetError, match=r"GOPR0999_11_00: this GoPro sequence has no sharp/"):
        load_pairs(root)


# ------------------------------------------------------------------------------------------------- lol


def test_lol_pairs_by_file_name(tmp_path: Path) -> None:
    pairs = load_pairs(make_lol(tmp_path))
    assert pairs == [
        Pair(name="1", degraded=tmp_path / "low" / "1.png", clean=tmp_path / "high" / "1.png"),
        Pair(name="22", degraded=tmp_path / "low" / "22.png", clean=tmp_path / "high" / "22.png"),
    ]


def test_unmatched_degraded_images_listed_up_to_five(tmp_path: Path) -> None:
    root = make_lol(tmp_path)
    put_all(root / "low", [f"9{k}.png" for k in range(7)])
    with pytest.raises(DatasetError) as caught:
        load_pairs(root)
    message = str(caught.value)
    assert f"{root / 'high'}: 7 degraded image(s) have no clean match" in message
    assert "90.png, 91.png, 92.png, 93.png, 94.png and 2 more" in message
    assert "95.png" not in message


def test_lol_without_high_names_the_missing_folder(tmp_path: Path) -> None:
    put(tmp_path / "low" / "1.png")
    with pytest.raises(DatasetError, match=r"not a lol dataset: no high/; lol expects low/ and high/"):
        load_pairs(tmp_path, "lol")


def test_zero_pairs_names_the_folders_looked_at(tmp_path: Path) -> None:
    (tmp_path / "low").mkdir()
    put(tmp_path / "high" / "1.png")
    with pytest.raises(DatasetError) as caught:
        load_pairs(tmp_path)
    message = str(caught.value)
    assert "lol: found no image pairs" in message
    assert f"{tmp_path / 'low'} (0 images)" in message and f"{tmp_path / 'high'} (1 images)" in message


# ------------------------------------------------------------------------------------------------ shiq


def test_shiq_pairs_a_with_d_and_ignores_s_and_t(tmp_path: Path) -> None:
    pairs = load_pairs(make_shiq(tmp_path))
    assert pairs == [
        Pair(name="00000", degraded=tmp_path / "00000_A.png", clean=tmp_path / "00000_D.png"),
        Pair(name="00001", degraded=tmp_path / "00001_A.png", clean=tmp_path / "00001_D.png"),
    ]


def test_shiq_input_without_ground_truth(tmp_path: Path) -> None:
    make_shiq(tmp_path)
    put(tmp_path / "00002_A.png")
    with pytest.raises(DatasetError, match=r"no clean match \(a ground truth NNNNN_D.*\): 00002_A\.png"):
        load_pairs(tmp_path)
    with pytest.raises(DatasetError, match=r"no SHIQ inputs"):
        load_pairs(make_lol(tmp_path / "lol"), "shiq")


# ------------------------------------------------------------------------------------------------ sots


def test_sots_matches_the_stem_before_the_first_underscore(tmp_path: Path) -> None:
    pairs = load_pairs(make_sots(tmp_path))
    assert names_of(pairs) == ["0001_0.8_0.2", "0001_0.9_0.16", "0002_0.8_0.2"]
    assert [pair.clean.name for pair in pairs] == ["0001.png", "0001.png", "0002.png"]


def test_sots_accepts_clear_and_indoor_names(tmp_path: Path) -> None:
    put_all(tmp_path / "hazy", ["1400_1.png", "1400_2.png", "1401_1.png"])
    put_all(tmp_path / "clear", ["1400.png", "1401.jpg"])
    pairs = load_pairs(tmp_path)
    assert [(pair.name, pair.clean.name) for pair in pairs] == [
        ("1400_1", "1400.png"), ("1400_2", "1400.png"), ("1401_1", "1401.jpg"),
    ]


def test_sots_errors(tmp_path: Path) -> None:
    root = make_sots(tmp_path / "a")
    put(root / "hazy" / "0003_0.8_0.2.jpg")
    with pytest.raises(DatasetError, match=r"before the first '_'\): 0003_0\.8_0\.2\.jpg"):
        load_pairs(root)
    put(root / "gt" / "0003.png")
    put(root / "gt" / "0003.jpg")
    with pytest.raises(DatasetError, match=r"0003\.jpg, 0003\.png could all be the ground truth of 0003_0\.8_0\.2"):
        load_pairs(root)
    put(tmp_path / "b" / "hazy" / "0001_1.png")
    with pytest.raises(DatasetError, match=r"not a sots dataset: no gt/ or clear/"):
        load_pairs(tmp_path / "b")


# -------------------------------------------------------------------------------------- paired-folders


@pytest.mark.parametrize(("degraded", "clean"), [("input", "target"), ("degraded", "clean"), ("synthetic", "gt"),
                                                 ("moire", "clear")])
def test_paired_folders_match_by_stem(tmp_path: Path, degraded: str, clean: str) -> None:
    put_all(tmp_path / degraded, ["rain-2.png", "rain-10.jpg"])
    put_all(tmp_path / clean, ["rain-2.jpg", "rain-10.png"])
    assert detect_layout(tmp_path) == "paired-folders"
    pairs = load_pairs(tmp_path)
    assert [(pair.name, pair.degraded.parent.name, pair.clean.name) for pair in pairs] == [
        ("rain-10", degraded, "rain-10.png"), ("rain-2", degraded, "rain-2.jpg"),
    ]


def test_lcdmoire_names_pair_across_their_tags(tmp_path: Path) -> None:
    put_all(tmp_path / "moire", ["000001_moire.png", "000002_moire.png"])
    put_all(tmp_path / "clear", ["000001_gt.png", "000002_gt.png"])
    pairs = load_pairs(tmp_path)
    assert [(p.degraded.name, p.clean.name) for p in pairs] == [("000001_moire.png", "000001_gt.png"),
                                                                 ("000002_moire.png", "000002_gt.png")]


def test_paired_folders_half_present_and_ambiguous(tmp_path: Path) -> None:
    put(tmp_path / "half" / "input" / "1.png")
    with pytest.raises(DatasetError, match=r"found input/ without target/"):
        load_pairs(tmp_path / "half", "paired-folders")
    both = make_rain(tmp_path / "both")
    put(both / "degraded" / "1.png")
    put(both / "clean" / "1.png")
    with pytest.raises(DatasetError, match=r"holds both input/ \+ target/ and degraded/ \+ clean/"):
        load_pairs(both)


def test_same_stem_with_two_suffixes_would_clash(tmp_path: Path) -> None:
    root = make_rain(tmp_path)
    put(root / "input" / "1.jpg")
    with pytest.raises(DatasetError, match=r"share the name 1 .*rename"):
        load_pairs(root)


# ------------------------------------------------------------------------------------- hidden, ordering


def test_hidden_files_and_folders_are_ignored(tmp_path: Path) -> None:
    root = make_rain(tmp_path)
    put(root / "input" / "._1.png")  # macOS metadata beside the real file
    put(root / "input" / ".3.png")
    put(root / "target" / ".1.png")
    (root / "input" / "readme.txt").write_text("not an image")
    put(root / ".ipynb_checkpoints" / "input" / "9.png")
    put(root / "__MACOSX" / "input" / "._2.png")
    assert [(pair.degraded.name, pair.clean.name) for pair in load_pairs(root)] == [("1.png", "1.png"),
                                                                                    ("2.png", "2.png")]
    gopro = make_gopro(tmp_path / "gopro")
    put(gopro / ".cache" / "blur" / "000001.png")
    assert all(not part.startswith(".") for pair in load_pairs(gopro) for part in pair.name.split("/"))


def test_output_is_sorted_by_name_and_repeatable(tmp_path: Path) -> None:
    put_all(tmp_path / "input", ["b.png", "10.png", "a.png", "2.PNG", "c.JPG"])
    put_all(tmp_path / "target", ["c.png", "a.png", "2.png", "10.png", "b.png"])
    first = load_pairs(tmp_path)
    assert names_of(first) == ["10", "2", "a", "b", "c"]
    assert load_pairs(tmp_path) == first
