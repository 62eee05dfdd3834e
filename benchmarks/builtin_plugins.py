"""How much each built-in restoration plugin undoes its degradation, and how fast it is.

    HF_HUB_OFFLINE=1 python benchmarks/builtin_plugins.py [--size 384] [--photos astronaut,chelsea,coffee,rocket]

Clean photos come from `skimage.data`; each is degraded synthetically (`plugins.data.degradations.degrade`, or
`plugins.builtin.synthetic` for moire and highlights) and the plugin's output is compared with the clean photo.
Prints a markdown table: mean PSNR/SSIM of the degraded input and of the output, and seconds per image.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.builtin import deblur, dehaze, demoire, denoise, derain, highlight, lowlight
from plugins.builtin.synthetic import moire, specular
from plugins.data.degradations import degrade

#: plugin id -> (degrade(clean, seed) -> degraded, restore(degraded) -> restored)
CASES: dict[str, tuple[Callable[[Image.Image, int], Image.Image], Callable[[Image.Image], Image.Image]]] = {
    "diffplugin/dehaze-classic": (lambda im, s: degrade(im, ["haze"], seed=s), dehaze.dehaze),
    "diffplugin/lowlight-classic": (lambda im, s: degrade(im, ["lowlight"], seed=s), lowlight.lowlight),
    "diffplugin/deblur-classic": (lambda im, s: degrade(im, ["blur"], seed=s), deblur.deblur),
    "diffplugin/derain-classic": (lambda im, s: degrade(im, ["rain"], seed=s), derain.derain),
    "diffplugin/desnow-classic": (lambda im, s: degrade(im, ["snow"], seed=s), derain.desnow),
    "diffplugin/demoire-classic": (moire, demoire.demoire),
    "diffplugin/highlight-classic": (specular, highlight.highlight),
    "diffplugin/denoise": (lambda im, s: degrade(im, ["noise"], seed=s), denoise.denoise),
}


def photos(names: list[str], size: int) -> list[Image.Image]:
    """skimage.data photos, RGB, short side `size` (downscaled for speed, as the tests do)."""
    from skimage import data

    out = []
    for name in names:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        factor = size / min(image.size)
        out.append(image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS))
    return out


def scores(image: Image.Image, clean: Image.Image) -> tuple[float, float]:
    from assistant.evaluation.metrics import psnr_ssim

    return psnr_ssim(image, clean)


def run(names: list[str], size: int, only: list[str] | None = None) -> list[dict[str, float | str]]:
    clean_photos = photos(names, size)
    rows = []
    for plugin_id, (make, restore) in CASES.items():
        if only and not any(o in plugin_id for o in only):
            continue
        before, after, seconds = [], [], []
        for seed, clean in enumerate(clean_photos):
            degraded = make(clean, seed)
            start = time.perf_counter()
            restored = restore(degraded)
            seconds.append(time.perf_counter() - start)
            before.append(scores(degraded, clean))
            after.append(scores(restored, clean))
        b, a = np.mean(before, axis=0), np.mean(after, axis=0)
        rows.append({"plugin": plugin_id, "psnr_in": b[0], "psnr_out": a[0], "ssim_in": b[1], "ssim_out": a[1],
                     "seconds": float(np.mean(seconds))})
    return rows


def table(rows: list[dict[str, float | str]]) -> str:
    lines = ["| plugin | PSNR degraded | PSNR output | SSIM degraded | SSIM output | s / image |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| `{r['plugin']}` | {r['psnr_in']:.2f} | {r['psnr_out']:.2f} | {r['ssim_in']:.3f} | "
              f"{r['ssim_out']:.3f} | {r['seconds']:.3f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=384, help="short side of the test photos, in pixels")
    parser.add_argument("--photos", default="astronaut,chelsea,coffee,rocket", help="skimage.data photo names")
    parser.add_argument("--only", default="", help="comma-separated parts of plugin ids to run (default: all)")
    args = parser.parse_args()
    names = [n for n in args.photos.split(",") if n]
    rows = run(names, args.size, [o for o in args.only.split(",") if o] or None)
    print(f"{len(names)} photos ({', '.join(names)}), short side {args.size} px\n")
    print(table(rows))


if __name__ == "__main__":
    main()
