"""Fit the judge's calibrated verdict and measure how often it agrees with full-reference PSNR/SSIM.

    python benchmarks/judge_calibration.py --extra-scenes          # build (or reuse) pairs, agreement
    python benchmarks/judge_calibration.py --extra-scenes --write  # ... and write the calibration
    python benchmarks/judge_calibration.py --extra-scenes --all-chains  # every pair of degradations (not shipped)

Clean photos (`skimage.data`, and scikit-learn's two sample photos when it is installed; short side 256 px; whole,
mirrored and a 70% crop; with --extra-scenes, as shipped, also textual-image's portrait and a 60% crop from the
opposite corner) are degraded per task with `plugins.data.degradations` (and the moire and specular
generators of `plugins/builtin/synthetic.py`) at strengths 0, 0.5 and 1 (0: a clean photo, which any restoration can
only harm). Each degraded photo is then edited by the task's built-in plugin with several option presets, by half-
strength blends of those results, and by two other tasks' built-ins (wrong edits). Plans are chains, so each photo
also gets two degradations at once and both steps of the plan, in both orders: the second step's input is the first
step's output, as in the executor; these start from a JPEG, as users' photos do. A pair's truth comes from the clean
photo: "better" when PSNR and SSIM both rose, "worse" when both fell (by at least 0.05 dB and 0.002); pairs where
they disagree are left out.

One small neural network per task (scikit-learn's MLP, one hidden layer) is fitted on the judge's features of each
pair (`assistant.judge.change_vector`). Agreement is measured by cross-validation over photos (a photo's pairs, all
variants, are either all fitted or all tested; five folds by default); the written model is then fitted on every
photo. The pairs folder (`--pairs`, one file per photo view) keeps each pair's photos as the plugin saw them, so
that new features can be tried without running the plugins again; it is extended, not rebuilt, when photos or
views are added, and a stopped run goes on where it stopped. Prints the agreement per task, overall, and of the
damage checks alone.

With --scenes DIR, also the 49 everyday scenes `python benchmarks/scenes.py fetch DIR` takes from Debian's
packages (photos of fruit, streets, buildings, boats, a forest, ...), each a photo the cross-validation holds out
as a whole. """

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scenes import SCENE, load_scene, scene_photos  # benchmarks/ is the script's own folder, first on sys.path
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from assistant.judge import (
    CALIBRATION_PATH,
    TaskModel,
    change_names,
    change_vector,
    features_of,
    small_copy,
)
from assistant.quality import judge as damage_check
from plugins.atomic_files import write_atomic
from plugins.builtin import deblur, dehaze, demoire, denoise, derain, highlight, lowlight
from plugins.builtin.synthetic import moire, specular
from plugins.data.degradations import degrade
from plugins.data.photos import with_short_side
from registry.errors import CannotHelp

SKIMAGE_PHOTOS = ("astronaut", "coffee", "camera", "grass", "brick", "immunohistochemistry", "page", "moon",
                  "chelsea", "rocket", "stereo_motorcycle", "coins", "gravel", "text", "hubble_deep_field", "retina",
                  "clock", "cell")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
#: A portrait that ships inside textual-image (a dependency of the chat): the only other photo found in the
#: installed packages; each photo is a scene the cross-validation holds out as a whole.
TEXTUAL_PHOTOS = ("gracehopper.jpg",)
STRENGTHS = (0.0, 0.5, 1.0)
PSNR_EPS, SSIM_EPS = 0.05, 0.002
#: The networks' size and L2 penalty: chosen by the cross-validated agreement (a logistic regression on the same
#: features agreed on 81%, a 32-unit network with a weak penalty overfits the photos it saw).
HIDDEN, ALPHA = (32,), 1.0
VARIANTS = ("full", "mirrored", "crop")
#: More views of each scene: a 60% crop from the opposite corner, seen at the same size (larger structures).
EXTRA_VARIANTS = ("corner",)
CHAIN_STRENGTHS = (0.5, 0.8, 1.0)
#: Degradations that come together in real photos, for the chained pairs (three per photo variant, drawn at random,
#: at one of CHAIN_STRENGTHS, saved as a JPEG).
COMBINATIONS = (("haze", "lowlight"), ("lowlight", "noise"), ("rain", "haze"), ("snow", "haze"), ("blur", "noise"),
                ("lowlight", "blur"), ("rain", "noise"), ("haze", "noise"))
TASK_OF = {"haze": "dehaze", "lowlight": "lowlight", "noise": "denoise", "rain": "derain", "snow": "desnow",
           "blur": "deblur"}

Edit = Callable[[Image.Image], Image.Image]
# Per task: its degradation and the presets of its built-in plugin that the pairs are made with.
TASKS: dict[str, tuple[Callable[[Image.Image, int, float], Image.Image], dict[str, Edit]]] = {
    "dehaze": (lambda im, s, k: degrade(im, ["haze"], seed=s, strength=k), {
        "default": dehaze.dehaze, "mild": lambda im: dehaze.dehaze(im, strength=0.6),
        "harsh": lambda im: dehaze.dehaze(im, strength=1.0, t0=0.02)}),
    "lowlight": (lambda im, s, k: degrade(im, ["lowlight"], seed=s, strength=k), {
        "default": lowlight.lowlight, "unbounded": lambda im: lowlight.lowlight(im, brightness=1.0),
        "mild": lambda im: lowlight.lowlight(im, gamma=0.4, brightness=1.0),
        "strong": lambda im: lowlight.lowlight(im, gamma=1.0, brightness=1.0)}),
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


@dataclass
class Pair:
    """One before/after pair: the judge-size copies (uint8) and the truth from the clean photo."""

    photo: str
    task: str
    kind: str  # "single", "wrong" (another task's plugin) or "chain"
    truth: int  # 1: PSNR and SSIM both rose, 0: both fell
    d_psnr: float
    d_ssim: float
    before: np.ndarray  # the photos as the plugin saw them (short side 256, uint8), so that the judge's small copy
    after: np.ndarray  # can be made again by whatever means the judge uses
    variant: str = "full"


def photo_names(extra: bool = False, scenes: Path | None = None) -> list[str]:
    names = list(SKIMAGE_PHOTOS)
    try:
        import sklearn.datasets  # noqa: F401  (only for its two sample photos, which ship inside the wheel)
    except ImportError:
        pass
    else:
        names += SKLEARN_PHOTOS
    names += list(TEXTUAL_PHOTOS) if extra else []
    return names + scene_photos(scenes) if scenes else names


def _photo(name: str, variant: str, scenes: Path | None = None) -> Image.Image:
    if name.startswith(SCENE) and scenes is not None:
        pixels = np.asarray(load_scene(scenes, name))
    elif name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        pixels = load_sample_image(name)
    elif name in TEXTUAL_PHOTOS:
        import importlib.resources

        with importlib.resources.as_file(importlib.resources.files("textual_image") / name) as path:
            pixels = np.asarray(Image.open(path).convert("RGB"))
    else:
        import skimage.data

        pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels[0] if isinstance(pixels, tuple) else pixels).convert("RGB")
    if variant == "crop":  # a 70 % crop seen at the same size: other content, larger structures
        image = image.crop((0, 0, round(image.width * 0.7), round(image.height * 0.7)))
    elif variant == "corner":
        image = image.crop((round(image.width * 0.4), round(image.height * 0.4), image.width, image.height))
    image = with_short_side(image, 256)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if variant == "mirrored" else image


class _Truth:
    """PSNR and SSIM of edits against one clean photo, relative to the edit's input."""

    def __init__(self, clean: Image.Image) -> None:
        self.reference = np.asarray(clean)

    def scores(self, image: Image.Image) -> tuple[float, float]:
        pixels = np.asarray(image)
        if np.array_equal(pixels, self.reference):
            return 100.0, 1.0
        return (peak_signal_noise_ratio(self.reference, pixels),
                structural_similarity(self.reference, pixels, channel_axis=2))

    @staticmethod
    def verdict(d_psnr: float, d_ssim: float) -> int | None:
        if d_psnr > PSNR_EPS and d_ssim > SSIM_EPS:
            return 1
        if d_psnr < -PSNR_EPS and d_ssim < -SSIM_EPS:
            return 0
        return None


def _edits(before: Image.Image, truth: _Truth, name: str, variant: str, task: str, kind: str,
           functions: list[Edit]) -> tuple[list[Pair], Image.Image | None]:
    """Every edit of `before` by `functions`, at full strength and half way; returns the pairs and the first
    function's full result (the next step's input in a chain)."""
    pairs: list[Pair] = []
    first: Image.Image | None = None
    scores_before, pixels_before = truth.scores(before), np.asarray(before)
    for function in functions:
        try:
            full = function(before).convert("RGB")
        except CannotHelp:
            continue
        first = full if first is None and function is functions[0] else first
        for amount in (1.0, 0.5):
            after = full if amount == 1.0 else Image.blend(before, full, amount)
            scores_after = truth.scores(after)
            d_psnr, d_ssim = scores_after[0] - scores_before[0], scores_after[1] - scores_before[1]
            verdict = truth.verdict(d_psnr, d_ssim)
            if verdict is not None:
                pairs.append(Pair(name, task, kind, verdict, d_psnr, d_ssim, pixels_before, np.asarray(after), variant))
    return pairs, first


def _as_jpeg(image: Image.Image, quality: int = 90) -> Image.Image:
    """The photo as a camera or phone saves it: users' photos are JPEGs."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _pairs_for(job: tuple[str, str, int, Path | None]) -> list[Pair]:
    """All before/after pairs for one photo variant."""
    warnings.filterwarnings("ignore", "divide by zero")
    name, variant, seed, scenes = job
    clean = _photo(name, variant, scenes)
    truth = _Truth(clean)
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    for task, (make, presets) in TASKS.items():
        wrong = [t for t in rng.permutation(list(TASKS)) if t != task][:2]
        for strength in STRENGTHS:
            before = make(clean, seed, strength).convert("RGB")
            pairs += _edits(before, truth, name, variant, task, "single", list(presets.values()))[0]
            for other in wrong:
                pairs += _edits(before, truth, name, variant, str(other), "wrong", [TASKS[other][1]["default"]])[0]
    for index in rng.choice(len(COMBINATIONS), size=3, replace=False):
        pairs += _chain_pairs(clean, truth, name, variant, COMBINATIONS[index], seed,
                              float(rng.choice(CHAIN_STRENGTHS)))
    return pairs


def _chain_pairs(clean: Image.Image, truth: _Truth, name: str, variant: str, combination: tuple[str, str],
                 seed: int, strength: float) -> list[Pair]:
    """Both steps of both plan orders for a photo with two degradations at once, saved as a JPEG: each step is
    judged on the previous step's output, as the executor runs a plan."""
    pairs: list[Pair] = []
    degraded = degrade(clean, list(combination), seed=seed, strength=strength)
    start: Image.Image | None = _as_jpeg(degraded.convert("RGB"))
    for order in (combination, combination[::-1]):
        current = start
        for degradation in order:
            task = TASK_OF[degradation]
            if current is None:
                break
            made, current = _edits(current, truth, name, variant, task, "chain", [TASKS[task][1]["default"]])
            pairs += made
    return pairs


def _all_chains_for(job: tuple[str, str, int, Path | None]) -> list[Pair]:
    """Every combination of COMBINATIONS for one photo variant (`--all-chains`), each at a strength drawn from
    CHAIN_STRENGTHS with a seed of its own."""
    warnings.filterwarnings("ignore", "divide by zero")
    name, variant, seed, scenes = job
    clean = _photo(name, variant, scenes)
    truth = _Truth(clean)
    rng = np.random.default_rng(seed + 7919)
    return [pair for number, combination in enumerate(COMBINATIONS)
            for pair in _chain_pairs(clean, truth, name, variant, combination, seed + 7919 + number,
                                     float(rng.choice(CHAIN_STRENGTHS)))]


def _pairs_file(job: tuple[str, str, int, Path | None, Path], chains: bool = False) -> Path:
    """Make one photo variant's pairs (with `chains`, `_all_chains_for`'s, in `NAME.VARIANT.chains.pkl`) into a
    file of the pairs folder, unless it is there; its path."""
    name, variant, seed, scenes, folder = job
    path = folder / f"{name.replace(':', '-')}.{variant}{'.chains' if chains else ''}.pkl"
    if not path.is_file():
        make = _all_chains_for if chains else _pairs_for
        write_atomic(path, pickle.dumps(make((name, variant, seed, scenes))))
    return path


def build(photos: list[str], seed: int, folder: Path, variants: tuple[str, ...] = VARIANTS,
          scenes: Path | None = None, all_chains: bool = False) -> list[Path]:
    """The pairs of every photo and variant, one file each in `folder` (made where missing: a stopped run goes
    on where it stopped). A photo's seeds depend only on its place and the variant's, so adding photos or variants
    at the end leaves the others' pairs as they were. Pairs hold their photos, so they stay on disk: 40 photos'
    worth (about 30,000 pairs) is more than 20 GB in memory."""
    every = VARIANTS + EXTRA_VARIANTS
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(name, variant, seed + 10 * i + every.index(variant), scenes, folder) for i, name in enumerate(photos)
            for variant in variants]
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        files = list(pool.map(_pairs_file, jobs))
        return files + list(pool.map(partial(_pairs_file, chains=True), jobs)) if all_chains else files


@dataclass
class Measured:
    """The judge's view of each pair: the model's input and the damage checks' verdict."""

    pairs: list[Pair]
    x: np.ndarray
    damage: np.ndarray


def _measure(path: Path) -> tuple[list[Pair], list[np.ndarray], list[bool]]:
    """The judge's view of every pair in one file of the pairs folder; the pairs come back without their photos."""
    pairs: list[Pair] = pickle.loads(path.read_bytes())
    x, damage = [], []
    for pair in pairs:
        before = features_of(small_copy(Image.fromarray(pair.before)))
        after = features_of(small_copy(Image.fromarray(pair.after)))
        damage.append(damage_check(before.measures, after.measures, pair.task).worse)
        x.append(change_vector(before, after))
        pair.before = pair.after = np.zeros((0,), np.uint8)
    return pairs, x, damage


def measure_all(files: list[Path]) -> Measured:
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(_measure, files))
    return Measured([p for r in results for p in r[0]], np.array([v for r in results for v in r[1]]),
                    np.array([d for r in results for d in r[2]]))


def fit(measured: Measured, keep: np.ndarray | None = None) -> dict:
    """One small MLP per task (scikit-learn's, 32 ReLU units, strong L2), stored as plain numbers."""
    from sklearn.neural_network import MLPClassifier

    keep = np.ones(len(measured.pairs), bool) if keep is None else keep
    tasks = {}
    for task in TASKS:
        mine = keep & np.array([p.task == task for p in measured.pairs])
        x = measured.x[mine]
        y = np.array([p.truth for p in measured.pairs])[mine]
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        network = MLPClassifier(HIDDEN, alpha=ALPHA, max_iter=800, random_state=0).fit((x - mean) / scale, y)
        tasks[task] = {"mean": mean.tolist(), "scale": scale.tolist(),
                       "layers": [[w.tolist(), b.tolist()]
                                  for w, b in zip(network.coefs_, network.intercepts_, strict=True)],
                       "pairs": int(mine.sum()), "better_share": round(float(y.mean()), 3)}
    return {"about": "Per task, a one-hidden-layer MLP on the judge's features of a step's input and output "
                     "(assistant.judge.change_vector); fitted by benchmarks/judge_calibration.py on synthetic pairs.",
            "features": change_names(),
            "photos": sorted({p.photo for p in measured.pairs}), "tasks": tasks}


def predict(model: dict, task: str, x: np.ndarray) -> np.ndarray:
    m = model["tasks"][task]
    stored = TaskModel(np.array(m["mean"]), np.array(m["scale"]),
                       tuple((np.array(w), np.array(b)) for w, b in m["layers"]))
    return np.array([stored.chance_better(row) > 0.5 for row in x], dtype=bool)


def cross_validated(measured: Measured, folds: int) -> np.ndarray:
    """The verdict ("better") for every pair from a model that never saw its photo."""
    photos = sorted({p.photo for p in measured.pairs})
    fold_of = {photo: i % folds for i, photo in enumerate(np.random.default_rng(0).permutation(photos))}
    fold = np.array([fold_of[p.photo] for p in measured.pairs])
    tasks = np.array([p.task for p in measured.pairs])
    verdict = np.zeros(len(measured.pairs), bool)
    for k in range(folds):
        model = fit(measured, fold != k)
        for task in TASKS:
            mine = (fold == k) & (tasks == task)
            verdict[mine] = predict(model, task, measured.x[mine])
    return verdict


def agreement(measured: Measured, calibrated: np.ndarray) -> str:
    truth = np.array([p.truth for p in measured.pairs])
    judged = calibrated & ~measured.damage
    damage_alone = ~measured.damage
    tasks = np.array([p.task for p in measured.pairs])
    kinds = np.array([p.kind for p in measured.pairs])
    lines = ["| task | pairs | better (truth) | judge agrees | damage checks alone agree | harmful edits let through |",
             "|---|---:|---:|---:|---:|---:|"]

    def row(label: str, mask: np.ndarray) -> str:
        harmful = mask & (truth == 0)
        return (f"| {label} | {mask.sum()} | {truth[mask].mean():.0%} | {(truth == judged)[mask].mean():.1%} | "
                f"{(truth == damage_alone)[mask].mean():.1%} | {judged[harmful].mean() if harmful.any() else 0:.1%} |")

    lines += [row(task, tasks == task) for task in TASKS]
    lines += [row(f"{kind} edits", kinds == kind) for kind in ("single", "wrong", "chain")]
    lines.append(row("**all**", np.ones(len(truth), bool)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="write assistant/judge_calibration.json")
    parser.add_argument("--pairs", type=Path, default=Path("judge-pairs"),
                        help="keep the pairs in this folder (local pickles, one per photo view) and reuse them")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-validation over photos")
    parser.add_argument("--extra-scenes", action="store_true",
                        help=f"also {', '.join(TEXTUAL_PHOTOS)} and the {', '.join(EXTRA_VARIANTS)} views")
    parser.add_argument("--scenes", type=Path, metavar="DIR",
                        help="also the everyday scenes fetched by `python benchmarks/scenes.py fetch DIR`")
    parser.add_argument("--build-only", action="store_true", help="build (or extend) the pairs folder and stop")
    parser.add_argument("--all-chains", action="store_true",
                        help="also every combination of two degradations per photo view, not three drawn at random")
    args = parser.parse_args()
    started = time.perf_counter()
    photos = photo_names(args.extra_scenes, args.scenes)
    variants = VARIANTS + EXTRA_VARIANTS if args.extra_scenes else VARIANTS
    files = build(photos, 0, args.pairs, variants, args.scenes, args.all_chains)
    if args.build_only:
        print(f"{len(files)} photo views in {args.pairs} ({time.perf_counter() - started:.0f} s)")
        return
    built = time.perf_counter()
    measured = measure_all(files)
    pairs = measured.pairs
    print(f"{len(pairs)} pairs from {len({p.photo for p in pairs})} photos (pairs {built - started:.0f} s, "
          f"features {time.perf_counter() - built:.0f} s)\n")
    print(f"{args.folds}-fold cross-validation over photos (each verdict from a model that never saw the photo):\n")
    print(agreement(measured, cross_validated(measured, args.folds)))
    model = fit(measured)
    print("\nThe model fitted on every photo, on the same pairs (how much it fits the photos it saw):\n")
    tasks = np.array([p.task for p in measured.pairs])
    fitted = np.zeros(len(tasks), bool)
    for task in TASKS:
        fitted[tasks == task] = predict(model, task, measured.x[tasks == task])
    print(agreement(measured, fitted))
    if args.write:
        CALIBRATION_PATH.write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {CALIBRATION_PATH}")


if __name__ == "__main__":
    main()
