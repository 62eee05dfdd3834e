"""Fit the judge's calibrated verdict and measure how often it agrees with full-reference PSNR/SSIM.

    python benchmarks/judge_calibration.py            # build pairs, fit, report agreement (held-out photos)
    python benchmarks/judge_calibration.py --write    # ... and write assistant/judge_calibration.json

Clean `skimage.data` photos (short side 256 px, mirrored variants) are degraded per task with
`plugins.data.degradations` (and the moire and specular generators of `plugins/builtin/synthetic.py`), at
strengths 0, 0.5 and 1 (0: a clean photo, which any restoration can only harm). Each degraded photo is then
edited by the task's built-in plugin with several option presets, by half-strength blends of those results, and
by two other tasks' built-ins (wrong edits). A pair's truth comes from the clean photo: "better" when PSNR and SSIM
both rose, "worse" when both fell (by at least 0.05 dB and 0.002); pairs where they disagree are left out. One
L2-regularised logistic regression per task is fitted on the change of the judge's features; calibration and
held-out pairs use different photos. Prints the agreement per task, overall, and of the damage checks alone.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from assistant.judge import CALIBRATION_PATH, FEATURE_NAMES, change_vector, features
from assistant.quality import judge as damage_check
from assistant.quality import measure as quality_measure
from benchmarks.detector_accuracy import fit_logistic
from plugins.builtin import deblur, dehaze, demoire, denoise, derain, highlight, lowlight
from plugins.builtin.synthetic import moire, specular
from plugins.data.degradations import degrade
from plugins.data.photos import with_short_side
from registry.errors import CannotHelp

CALIBRATION_PHOTOS = ("astronaut", "coffee", "camera", "grass", "brick", "immunohistochemistry", "page", "moon")
HELD_OUT_PHOTOS = ("chelsea", "rocket", "stereo_motorcycle", "coins", "gravel", "text", "hubble_deep_field",
                   "retina")
STRENGTHS = (0.0, 0.5, 1.0)
PSNR_EPS, SSIM_EPS = 0.05, 0.002

Edit = Callable[[Image.Image], Image.Image]
# Per task: its degradation and the presets of its built-in plugin that the pairs are made with.
TASKS: dict[str, tuple[Callable[[Image.Image, int, float], Image.Image], dict[str, Edit]]] = {
    "dehaze": (lambda im, s, k: degrade(im, ["haze"], seed=s, strength=k), {
        "default": dehaze.dehaze, "mild": lambda im: dehaze.dehaze(im, strength=0.6),
        "harsh": lambda im: dehaze.dehaze(im, strength=1.0, t0=0.02)}),
    "lowlight": (lambda im, s, k: degrade(im, ["lowlight"], seed=s, strength=k), {
        "default": lowlight.lowlight, "mild": lambda im: lowlight.lowlight(im, gamma=0.4),
        "strong": lambda im: lowlight.lowlight(im, gamma=1.0)}),
    "deblur": (lambda im, s, k: degrade(im, ["blur"], seed=s, strength=k), {
        "default": deblur.deblur, "strong": lambda im: deblur.deblur(im, iterations=20)}),
    "derain": (lambda im, s, k: degrade(im, ["rain"], seed=s, strength=k), {
        "default": derain.derain, "eager": lambda im: derain.derain(im, threshold=0.015)}),
    "desnow": (lambda im, s, k: degrade(im, ["snow"], seed=s, strength=k), {
        "default": derain.desnow, "eager": lambda im: derain.desnow(im, threshold=0.05)}),
    "denoise": (lambda im, s, k: degrade(im, ["noise"], seed=s, strength=k), {
        "default": denoise.denoise, "strong": lambda im: denoise.denoise(im, strength=2.0, radius=4)}),
    "demoire": (lambda im, s, k: moire(im, seed=s, strength=k) if k else im, {
        "default": demoire.demoire, "eager": lambda im: demoire.demoire(im, threshold=0.8)}),
    "highlight": (lambda im, s, k: specular(im, seed=s, strength=k) if k else im, {
        "default": highlight.highlight, "eager": lambda im: highlight.highlight(im, threshold=0.03)}),
}


VARIANTS = ("full", "mirrored", "crop")


def _photo(name: str, variant: str) -> Image.Image:
    import skimage.data

    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB")
    if variant == "crop":  # a 70 % crop seen at the same size: other content, larger structures
        image = image.crop((0, 0, round(image.width * 0.7), round(image.height * 0.7)))
    image = with_short_side(image, 256)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if variant == "mirrored" else image


def _blend(before: Image.Image, after: Image.Image, amount: float) -> Image.Image:
    return Image.blend(before, after, amount)


def _pairs_for(job: tuple[str, str, int]) -> list[dict]:
    """All before/after pairs for one photo variant: (task, truth, change vector, damage verdict)."""
    warnings.filterwarnings("ignore", "divide by zero")  # PSNR of a clean photo against itself is infinite
    name, variant, seed = job
    clean = _photo(name, variant)
    reference = np.asarray(clean)
    rows = []
    rng = np.random.default_rng(seed)
    task_names = list(TASKS)
    for task, (make, presets) in TASKS.items():
        for strength in STRENGTHS:
            before = make(clean, seed, strength).convert("RGB")
            b = np.asarray(before)
            psnr_b = peak_signal_noise_ratio(reference, b)
            ssim_b = structural_similarity(reference, b, channel_axis=2)
            feats_b, quality_b = features(before), quality_measure(before)
            wrong = [t for t in rng.permutation(task_names) if t != task][:2]
            edits: list[tuple[str, str, Edit]] = [(task, p, f) for p, f in presets.items()]
            edits += [(t, "default", TASKS[t][1]["default"]) for t in wrong]
            for edit_task, preset, function in edits:
                try:
                    full = function(before).convert("RGB")
                except CannotHelp:
                    continue
                for amount in (1.0, 0.5):
                    after = full if amount == 1.0 else _blend(before, full, amount)
                    a = np.asarray(after)
                    d_psnr = peak_signal_noise_ratio(reference, a) - psnr_b if not np.array_equal(a, b) else 0.0
                    d_ssim = structural_similarity(reference, a, channel_axis=2) - ssim_b
                    if d_psnr > PSNR_EPS and d_ssim > SSIM_EPS:
                        truth = 1
                    elif d_psnr < -PSNR_EPS and d_ssim < -SSIM_EPS:
                        truth = 0
                    else:
                        continue
                    rows.append({"photo": name, "task": edit_task, "degradation_task": task, "strength": strength,
                                 "preset": preset, "amount": amount, "truth": truth,
                                 "x": change_vector(feats_b, features(after)).tolist(),
                                 "damage": damage_check(quality_b, quality_measure(after), edit_task).worse})
    return rows


def build(photos: tuple[str, ...], seed: int) -> list[dict]:
    jobs = [(name, variant, seed + 10 * i + j) for i, name in enumerate(photos) for j, variant in enumerate(VARIANTS)]
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        return [row for rows in pool.map(_pairs_for, jobs) for row in rows]


def fit(rows: list[dict]) -> dict:
    tasks = {}
    for task in TASKS:
        mine = [r for r in rows if r["task"] == task]
        x = np.array([r["x"] for r in mine])
        y = np.array([r["truth"] for r in mine], dtype=float)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        # Both classes weigh the same, so the verdict is not simply "most edits of this task help".
        weight = np.where(y == 1, 0.5 / max(y.sum(), 1), 0.5 / max((1 - y).sum(), 1)) * len(y)
        weights, bias = fit_logistic((x - mean) / scale, y, weight, l2=3e-2)
        tasks[task] = {"mean": mean.tolist(), "scale": scale.tolist(), "weights": [*weights.tolist(), bias],
                       "pairs": len(mine), "better_share": round(float(y.mean()), 3)}
    return {"about": "Per-task logistic regression on the change of the judge's features (after - before) and the "
                     "mean absolute change; fitted by benchmarks/judge_calibration.py on synthetic pairs.",
            "features": [*FEATURE_NAMES, "mean_abs_change"], "photos": list(CALIBRATION_PHOTOS), "tasks": tasks}


def agreement(rows: list[dict], model: dict) -> None:
    by_task: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for r in rows:
        m = model["tasks"][r["task"]]
        z = (np.array(r["x"]) - np.array(m["mean"])) / np.array(m["scale"])
        better = float(z @ np.array(m["weights"][:-1]) + m["weights"][-1]) > 0
        verdict_better = better and not r["damage"]
        by_task[r["task"]].append((r["truth"], int(verdict_better), int(not r["damage"])))
    print("| task | pairs | better (truth) | judge agrees | damage checks alone agree | harmful edits let through |")
    print("|---|---:|---:|---:|---:|---:|")
    total = []
    for task, items in by_task.items():
        arr = np.array(items)
        total.extend(items)
        harmful = arr[arr[:, 0] == 0]
        print(f"| {task} | {len(arr)} | {arr[:, 0].mean():.0%} | {(arr[:, 0] == arr[:, 1]).mean():.1%} | "
              f"{(arr[:, 0] == arr[:, 2]).mean():.1%} | {harmful[:, 1].mean() if len(harmful) else 0:.1%} |")
    arr = np.array(total)
    harmful = arr[arr[:, 0] == 0]
    print(f"| **all** | {len(arr)} | {arr[:, 0].mean():.0%} | **{(arr[:, 0] == arr[:, 1]).mean():.1%}** | "
          f"{(arr[:, 0] == arr[:, 2]).mean():.1%} | {harmful[:, 1].mean():.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write assistant/judge_calibration.json")
    parser.add_argument("--pairs", type=Path, help="keep the pairs in this JSON file and reuse it when it exists")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.pairs and args.pairs.is_file():
        train, held_out = json.loads(args.pairs.read_text())
    else:
        train, held_out = build(CALIBRATION_PHOTOS, 0), build(HELD_OUT_PHOTOS, 1000)
        if args.pairs:
            args.pairs.write_text(json.dumps([train, held_out]))
    print(f"pairs: {len(train)} calibration, {len(held_out)} held-out ({time.perf_counter() - started:.0f} s)\n")
    model = fit(train)
    print("Calibration photos (fit):\n")
    agreement(train, model)
    print("\nHeld-out photos:\n")
    agreement(held_out, model)
    if args.write:
        CALIBRATION_PATH.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {CALIBRATION_PATH}")


if __name__ == "__main__":
    main()
