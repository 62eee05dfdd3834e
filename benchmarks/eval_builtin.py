"""docs/results.md's plugin table: every built-in restoration plugin, through `diffplugin eval plugin`'s code, on
synthetic degradations of real photos (scikit-image), with a contact sheet each.

    PYTHONPATH=. python benchmarks/eval_builtin.py [--size 320] [--work /tmp/eval-builtin] [--sheets docs/results]

For each plugin this is what these commands do by hand (shown for dehaze):

    diffplugin data synth clean-photos/ -o haze-set --degradations haze
    diffplugin eval plugin diffplugin/dehaze-classic --data haze-set/pairs.csv -o eval-dehaze --sheet dehaze.jpg

Moire and specular highlights are not among `data synth`'s degradations; their pairs come from
`plugins.builtin.synthetic` and are written in the same official CSV format.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import PIL.Image

#: plugin id -> the degradation it undoes (a `data synth` name, or moire / highlight)
PLUGINS = {
    "diffplugin/dehaze-classic": "haze",
    "diffplugin/derain-classic": "rain",
    "diffplugin/desnow-classic": "snow",
    "diffplugin/deblur-classic": "blur",
    "diffplugin/lowlight-classic": "lowlight",
    "diffplugin/denoise": "noise",
    "diffplugin/demoire-classic": "moire",
    "diffplugin/highlight-classic": "highlight",
}


def clean_photos(folder: Path, size: int) -> Path:
    from plugins.data.photos import sample_photos, with_short_side

    folder.mkdir(parents=True, exist_ok=True)
    for name, image in sample_photos():
        with_short_side(image, size).save(folder / f"{name}.png")
    return folder


def dataset(clean: Path, degradation: str, folder: Path) -> Path:
    from plugins.builtin.synthetic import moire, specular
    from plugins.data.pairs import Pair, list_images, make_paired_dataset, write_pairs

    if degradation not in ("moire", "highlight"):
        return make_paired_dataset(clean, folder, [degradation])
    make = moire if degradation == "moire" else specular
    (folder / "degraded").mkdir(parents=True)
    pairs = []
    for seed, path in enumerate(list_images(clean)):
        with PIL.Image.open(path) as opened:
            degraded = folder / "degraded" / f"{path.stem}_0.png"
            make(opened.convert("RGB"), seed).save(degraded)
        pairs.append(Pair(clean=path, degraded=degraded))
    write_pairs(folder / "pairs.csv", pairs)
    return folder / "pairs.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=320, help="short side of the photos, in pixels")
    parser.add_argument("--work", type=Path, default=None, help="datasets and outputs (default: a temp folder)")
    parser.add_argument("--sheets", type=Path, default=Path("docs/results"), help="where contact sheets go")
    args = parser.parse_args()
    os.environ.setdefault("DIFFPLUGIN_HOME", tempfile.mkdtemp(prefix="eval-builtin-home-"))
    work = args.work or Path(tempfile.mkdtemp(prefix="eval-builtin-"))

    from assistant.evaluation.datasets import load_pairs
    from assistant.evaluation.plugin_eval import evaluate_plugin, sheet_for, write_report
    from assistant.executor import Executor
    from assistant.paths import open_registry

    clean = clean_photos(work / "clean", args.size)
    registry, executor = open_registry(), Executor()
    args.sheets.mkdir(parents=True, exist_ok=True)
    print(f"{len(list(clean.iterdir()))} photos (scikit-image), short side {args.size} px; work folder {work}\n")
    print("| plugin | degradation | pairs | PSNR degraded → output (dB) | SSIM degraded → output | sheet |")
    print("|---|---|---:|---:|---:|---|")
    for plugin, degradation in PLUGINS.items():
        pairs = load_pairs(dataset(clean, degradation, work / degradation), "csv")
        report = evaluate_plugin(plugin, pairs, work / "eval" / degradation, registry, executor)
        write_report(report)
        sheet = args.sheets / f"sheet-{degradation}.jpg"
        sheet_for(report, pairs, limit=3).save(sheet, quality=85)
        m = report.mean
        print(f"| `{plugin}` | {degradation} | {len(pairs)} | {m['psnr_input']:.2f} → **{m['psnr']:.2f}** | "
              f"{m['ssim_input']:.3f} → **{m['ssim']:.3f}** | [{sheet.name}]({sheet.name.replace(' ', '%20')}) |")


if __name__ == "__main__":
    main()
