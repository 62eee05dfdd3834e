"""What judging a step costs next to the step itself, for each restoration built-in.

    python benchmarks/judge_cost.py

A judged step costs one `look` of its output (the input's was taken before) and one `assess`. Both are timed
against the built-in plugin on the same photo, at 512 px and at 12 MP (skimage's astronaut, resized; dimmed to a
third for lowlight, which leaves a well-exposed photo as it was), median of
5 runs after a warm-up. Prints milliseconds and the judge's share of the plugin's time.
"""

from __future__ import annotations

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


def median_ms(function: Callable[[], object], repeats: int = 5) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    photo = Image.fromarray(skimage.data.astronaut()).convert("RGB")
    print("| photo | plugin | plugin ms | judge ms | judge / plugin |")
    print("|---|---|---:|---:|---:|")
    for label, size in (("512 px", (512, 512)), ("12 MP", (4000, 3000))):
        bright = photo.resize(size)
        dim = bright.point(lambda v: v // 3)  # lowlight leaves a well-exposed photo as it was
        for task, plugin in PLUGINS.items():
            image = dim if task == "lowlight" else bright
            before = look(image)
            try:
                output = plugin(image)
            except Exception as err:  # a built-in that refuses this photo (CannotHelp) has nothing to judge
                print(f"| {label} | {task} | refused: {err} | | |")
                continue
            plugin_ms = median_ms(lambda plugin=plugin, image=image: plugin(image), 3 if label == "12 MP" else 5)
            judge_ms = median_ms(lambda output=output, task=task, before=before: assess(before, look(output), task))
            print(f"| {label} | {task} | {plugin_ms:.0f} | {judge_ms:.1f} | {judge_ms / plugin_ms:.1%} |")


if __name__ == "__main__":
    main()
