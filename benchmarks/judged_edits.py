"""How often does a judged edit hand back a photo further from the truth than its input, on degradations the judge
was not calibrated on?

    python benchmarks/scenes.py fetch ~/.cache/diffplugin-scenes    # once
    python benchmarks/judged_edits.py --scenes ~/.cache/diffplugin-scenes

The judge is calibrated on `plugins.data.degradations` (benchmarks/judge_calibration.py). This benchmark degrades
clean photos with the other looks the detector benchmark imitates real photos with (heavy, light, faint and thin
rain, lens drops, snow of many sizes, even haze, night, colour noise, camera shake, long blur, glare, moire; see
benchmarks/detector_accuracy.py), asks for the fix in words ("remove the rain", ...), plans and runs it as `diffplugin
edit` does (built-in plugins, judge on), and compares input and result with the clean photo. A result is "worse"
when PSNR fell by more than 0.1 dB and SSIM by more than 0.002, "better" when both rose by as much. Photos: the
detector's held-out ones (chelsea, rocket, brick, coins and every fifth scene), long side 448 px, one strength
(0.5, 0.75 or 1) drawn per photo and look. Prints one line per edit, then a table per look.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import detector_accuracy  # benchmarks/ is the script's own folder, first on sys.path
import numpy as np
from PIL import Image
from scenes import scene_photos
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from assistant.executor import Executor
from assistant.paths import open_registry
from assistant.planning import Plan, load_planner, run_plan
from plugins.data.degradations import to_array, to_image

REQUESTS = {"rain_heavy": "remove the rain", "rain_light": "remove the rain", "rain_faint": "remove the rain",
            "rain_thin": "remove the rain", "drops": "remove the rain drops", "drops_glass": "remove the rain drops",
            "snow_sizes": "remove the snow", "snow_soft": "remove the snow", "haze_uniform": "remove the haze",
            "night": "it's too dark, brighten it", "noise_colour": "remove the noise",
            "shake": "it's blurry, sharpen it", "blur_long": "it's blurry, sharpen it", "highlight": "remove the glare",
            "moire": "remove the moire pattern"}
SIZE = 448


@dataclass(frozen=True)
class Edit:
    look: str
    psnr_change: float
    ssim_change: float
    changed: bool

    @property
    def worse(self) -> bool:
        return self.psnr_change < -0.1 and self.ssim_change < -0.002

    @property
    def better(self) -> bool:
        return self.psnr_change > 0.1 and self.ssim_change > 0.002


def _small(image: Image.Image) -> Image.Image:
    scale = SIZE / max(image.size)
    if scale >= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def kept(plan: Plan) -> str:
    """'dehaze [preset] at 50%, ...' for the steps a judged plan kept."""
    parts = []
    for step in plan.steps:
        preset = next((t.preset for t in step.tries if t.verdict == "kept" and t.preset), None)
        parts.append(step.task + (f" [{preset}]" if preset else "") + (f" at {step.mix:.0%}" if step.mix < 1 else ""))
    return ", ".join(parts) or "nothing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, metavar="DIR", required=True,
                        help="the everyday scenes fetched by `python benchmarks/scenes.py fetch DIR`")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    detector_accuracy.scenes_dir = args.scenes
    if "DIFFPLUGIN_HOME" not in os.environ:  # a registry of the built-ins only, not the user's plugins
        os.environ["DIFFPLUGIN_HOME"] = tempfile.mkdtemp(prefix="diffplugin-judged-edits-")
    registry = open_registry(None)
    planner, executor = load_planner(registry), Executor()
    rng = np.random.default_rng(args.seed)
    edits: list[Edit] = []
    for name in [*detector_accuracy.HELD_OUT_PHOTOS, *scene_photos(args.scenes)[4::5]]:
        clean = _small(detector_accuracy.photo(name))
        truth = np.asarray(clean)
        for look, request in REQUESTS.items():
            strength = float(rng.choice([0.5, 0.75, 1.0]))
            look_rng = np.random.default_rng(int(rng.integers(1e9)))
            degraded = to_image(detector_accuracy.EXTRA[look](to_array(clean), look_rng, strength))
            plan = planner.plan(request, degraded)
            result = run_plan(plan, degraded, registry, executor) if plan.steps else None
            before = np.asarray(degraded)
            after = np.asarray(result.image.convert("RGB")) if result else before
            edit = Edit(look, peak_signal_noise_ratio(truth, after) - peak_signal_noise_ratio(truth, before),
                        structural_similarity(truth, after, channel_axis=2)
                        - structural_similarity(truth, before, channel_axis=2), not np.array_equal(before, after))
            edits.append(edit)
            print(f"{name:18s} {look:13s} {strength:.2f}  kept: {kept(plan):28s} PSNR {edit.psnr_change:+6.2f} dB  "
                  f"SSIM {edit.ssim_change:+.3f}{'  WORSE' if edit.worse else ''}", flush=True)
    print("\n| look | edits | changed | better | worse | mean PSNR change |\n|---|---:|---:|---:|---:|---:|")
    for look in REQUESTS:
        rows = [e for e in edits if e.look == look]
        print(f"| {look} | {len(rows)} | {sum(e.changed for e in rows)} | {sum(e.better for e in rows)} | "
              f"{sum(e.worse for e in rows)} | {np.mean([e.psnr_change for e in rows]):+.2f} dB |")
    print(f"| **all** | {len(edits)} | {sum(e.changed for e in edits)} | {sum(e.better for e in edits)} | "
          f"{sum(e.worse for e in edits)} | {np.mean([e.psnr_change for e in edits]):+.2f} dB |")


if __name__ == "__main__":
    main()
