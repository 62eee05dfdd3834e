"""Clean photos of everyday scenes for calibration, taken from Debian packages (fetched once into a folder).

    python benchmarks/scenes.py fetch ~/.cache/diffplugin-scenes     # apt-get download + dpkg-deb -x, no install
    python benchmarks/judge_calibration.py --extra-scenes --scenes ~/.cache/diffplugin-scenes
    python benchmarks/detector_accuracy.py --scenes ~/.cache/diffplugin-scenes

The photos that ship inside the installed Python packages are few and mostly not everyday photos (microscopy,
text, the moon), and a calibration cross-validated over photos learns the scenes it saw: each new scene moved the
judge's agreement. Debian's archive answers here, and two of its packages carry photos: OpenCV's sample data
(`opencv-doc`: fruit, a street, a building, a squirrel, a football match, ...) and KDE Plasma's wallpapers
(`plasma-workspace-wallpapers`: landscapes, boats, a forest path, ...), and MATE's nature backgrounds
(`mate-backgrounds`: close-ups of flowers, leaves, grass, a dune, with the soft backgrounds of real lenses), and
the photos among Ubuntu Touch's wallpapers (`lomiri-wallpapers-16.04` and `-20.04`: mountains, a stream, dogs, a
living room, a bird). None is installed: the packages are
downloaded and unpacked into a temporary folder, and the chosen photos are copied, at most 1024 px long, as PNG.
The photos stay under their packages' licences (see `/usr/share/doc/PACKAGE/copyright` inside each); nothing of
them is committed here, only the calibration fitted on them.

Chosen by eye as clean (no haze, blur, noise or low light of their own); left out: drawings and renders,
chessboards, a painting, a misty lake (`DarkestHour`), a night sky (`MilkyWay`), a road shot from a moving car
(`Storm`) and a sun shining into the lens (`sunset`), which are degraded or not photos, and one of each
near-duplicate pair (stereo views, the same scene twice).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

#: package -> (folder inside the package, {scene name: file under that folder}).
DEBIAN_SCENES: dict[str, tuple[str, dict[str, str]]] = {
    "opencv-doc": ("usr/share/doc/opencv-doc/examples/data", {
        "aerial-town": "aero3.jpg", "aloe": "aloeL.jpg", "apple": "apple.jpg", "baboon": "baboon.jpg",
        "building": "building.jpg", "butterfly": "butterfly.jpg", "dog": "chicky_512.png",
        "notebook": "ela_original.jpg", "fruits": "fruits.jpg", "palace": "home.jpg", "street": "leuvenA.jpg",
        "football": "messi5.jpg", "orange": "orange.jpg", "toys": "rubberwhale1.png", "squirrel": "squirrel_cls.jpg",
        "desk": "stuff.jpg"}),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers", {
        "pier": "BytheWater/contents/images/1920x1080.jpg", "jetty": "ColdRipple/contents/images/1920x1080.jpg",
        "boats": "EveningGlow/contents/images/1920x1080.jpg", "leaf": "FallenLeaf/contents/images/1920x1080.jpg",
        "facade": "Grey/contents/images/1920x1080.jpg", "kite": "Kite/contents/images/1920x1080.jpg",
        "plants": "OneStandsOut/contents/images/1920x1080.jpg", "forest": "Path/contents/images/1920x1080.jpg",
        "lake-dusk": "summer_1am/contents/images/1920x1080.jpg"}),
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature", {
        "water-drop": "Aqua.jpg", "leaf-veins": "Blinds.jpg", "dune": "Dune.jpg", "red-flower": "FreshFlower.jpg",
        "marigold": "Garden.jpg", "grass-blades": "GreenMeadow.jpg", "ladybird": "LadyBird.jpg",
        "wet-leaves": "RainDrops.jpg", "dandelion": "TwoWings.jpg", "planks": "Wood.jpg",
        "yellow-flower": "YellowFlower.jpg"}),
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds", {
        "pier-cables": "Bridge_by_Sander_Klootwijk.jpg", "fig-tree": "Dragonfly_by_Bolly.jpg",
        "fig-plate": "Picture_0B_by_freespace.jpg", "brushes": "Picture_1A_by_freespace.jpg",
        "living-room": "Wine_by_Jakkub_Mede.jpg", "autumn-hills": "aitzgorri_by_Aitzol_Berasategi.jpg",
        "bird-lamp": "free_by_Peter_Nerlich.jpg", "dogs": "friends_by_Aitzol_Berasategi.jpg",
        "wall-clock": "greentock_by_Peter_Nerlich.jpg", "stream": "life_by_Aitzol_Berasategi.jpg",
        "mountain-path": "picosdeeuropa_by_Aitzol_Berasategi.jpg",
        "dandelions": "seeding_by_Clements_Engelhardt.jpg"}),
    "lomiri-wallpapers-20.04": ("usr/share/backgrounds", {"nuthatch": "Kleiber_by_Lukas_Baubkus.jpg"}),
}
LONG_SIDE = 1024


def scene_names() -> list[str]:
    return [name for _, scenes in DEBIAN_SCENES.values() for name in scenes]


def fetch(folder: Path) -> list[Path]:
    """Download the packages (no install), unpack them into a temporary folder and copy the chosen photos into
    `folder` as `NAME.png`; photos already there are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        for package, (inner, scenes) in DEBIAN_SCENES.items():
            wanted = {name: file for name, file in scenes.items() if not (folder / f"{name}.png").is_file()}
            if not wanted:
                continue
            print(f"downloading {package} ...", file=sys.stderr)
            subprocess.run(["apt-get", "download", package], cwd=work, check=True, capture_output=True)
            deb = next(work.glob(f"{package}_*.deb"))
            unpacked = work / package
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
            for name, file in wanted.items():
                with Image.open(unpacked / inner / file) as opened:
                    image = opened.convert("RGB")
                image.thumbnail((LONG_SIDE, LONG_SIDE), Image.LANCZOS)
                target = folder / f"{name}.png"
                image.save(target)
                written.append(target)
            copyright_file = unpacked / "usr/share/doc" / package / "copyright"
            if copyright_file.is_file():
                shutil.copyfile(copyright_file, folder / f"{package}.copyright")
    return written


#: How the calibration scripts name a fetched scene among their other photos ("scene:pier").
SCENE = "scene:"


def scene_photos(folder: Path) -> list[str]:
    """The fetched scenes in `folder` as photo names (`SCENE` + name), in DEBIAN_SCENES' order; names the missing
    ones when any is."""
    missing = [name for name in scene_names() if not (folder / f"{name}.png").is_file()]
    if missing:
        raise SystemExit(f"{folder}: missing {', '.join(missing)}; run: python benchmarks/scenes.py fetch {folder}")
    return [SCENE + name for name in scene_names()]


def load_scene(folder: Path, photo: str) -> Image.Image:
    """The RGB pixels of a photo named by `scene_photos`."""
    with Image.open(folder / f"{photo.removeprefix(SCENE)}.png") as opened:
        return opened.convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=["fetch"])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    written = fetch(args.folder)
    print(f"{len(written)} new photos in {args.folder} ({len(scene_names())} scenes in all)")


if __name__ == "__main__":
    main()
