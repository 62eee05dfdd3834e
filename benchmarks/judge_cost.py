"""What judging a step costs next to the step itself, for each restoration built-in.

    python benchmarks/judge_cost.py                 # 512 px and 12 MP
    python benchmarks/judge_cost.py --sizes 256 512  # small photos only (12 MP takes minutes)

A judged step costs one `look` of its output (the input's was taken before) and one `assess`. Both are timed
against the built-in plugin on the same photo, at 512 px and at 12 MP (skimage's astronaut, resized; dimmed to a
third for lowlight, which leaves a well-exposed photo as it was), median of 5 runs after a warm-up (3 for the
plugins at 12 MP, 15 for the judge). Prints wall-clock and CPU milliseconds, the judge's share of the plugin's time
in each, and the load average: on a busy shared machine the CPU times are the ones to compare between runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import skimage.data
from PIL import Image

from assistant.judge import assess, look
from plugins.builtin import deblur, dehaze, demoire, denoise, derain, highlight, lowlight

PLUGINS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "dehaze": dehaze.dehaze, "lowlight": lowlight.lowlight, "deblur": deblur.deblur, "derain": derain.derain,
    "desnow": derain.desnow, "demoire": demoire.demoire, "highlight": highlight.highlight,
    "denoise": denoise.denoise}


def median_ms(function: Callable[[], object], repeats: int = 5) -> tuple[float, float]:
    """Median wall-clock and CPU milliseconds (the process's CPU time, all threads: what a busy machine cannot
    inflate, though it counts a multi-threaded filter's threads together)."""
    function()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


SIZES = {"256": ("256 px", (256, 256)), "512": ("512 px", (512, 512)), "12mp": ("12 MP", (4000, 3000))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["512", "12mp"])
    args = parser.parse_args()
    photo = Image.fromarray(skimage.data.astronaut()).convert("RGB")
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs\n")
    print("| photo | plugin | plugin ms | judge ms | judge / plugin | plugin CPU ms | judge CPU ms | share of CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, size in (SIZES[name] for name in args.sizes):
        bright = photo.resize(size)
        dim = bright.point(lambda v: v // 3)  # lowlight leaves a well-exposed photo as it was
        for task, plugin in PLUGINS.items():
            image = dim if task == "lowlight" else bright
            before = look(image)
            try:
                output = plugin(image)
            except Exception as err:  # a built-in that refuses this photo (CannotHelp) has nothing to judge
                print(f"| {label} | {task} | refused: {err} | | | | | |")
                continue
            plugin = median_ms(lambda plugin=plugin, image=image: plugin(image), 3 if label == "12 MP" else 5)
            judge = median_ms(lambda output=output, task=task, before=before: assess(before, look(output), task), 15)
            print(f"| {label} | {task} | {plugin[0]:.0f} | {judge[0]:.1f} | {judge[0] / plugin[0]:.1%} | "
                  f"{plugin[1]:.0f} | {judge[1]:.1f} | {judge[1] / plugin[1]:.1%} |")


if __name__ == "__main__":
    main()
