"""Synthetic photo degradations for quick experiments and tests of the restoration plugins.

Every degradation takes a float32 HxWx3 image in [0, 1], a numpy Generator and a `strength` (0 leaves the
image unchanged, except for `jpeg` which always re-encodes; 1 is a typical benchmark-like amount) and returns
a new image of the same shape, float32, clipped to [0, 1]. Sizes (streak lengths, flake radii, blur length)
scale with the image, so a degradation looks alike at 128 px and at 1024 px.

These are stand-ins for quick checks, not replacements for the real benchmark data the plugins were trained on.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from plugins.errors import BadInput

Degradation = Callable[[np.ndarray, np.random.Generator, float], np.ndarray]

# Side length that the relative sizes below were tuned at; sizes scale linearly from it.
_REFERENCE_SIZE = 256.0


# ----------------------------------------------------------------------------------------------- helpers


def _checked(image: np.ndarray, strength: float) -> np.ndarray:
    """Validate the common arguments; return the image as float32 (no copy when it already is)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if not strength >= 0:  # also rejects NaN
        raise BadInput(f"strength must be >= 0, got {strength}")
    return image.astype(np.float32, copy=False)


def _finish(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


def _unit(image: np.ndarray) -> float:
    """Pixels per reference pixel, so sizes tuned at 256 px carry over to any resolution."""
    return min(image.shape[:2]) / _REFERENCE_SIZE


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int = 4) -> np.ndarray:
    """Low-frequency random field in [0, 1]: bicubic upsampling of a coarse random grid.

    Upsampling a few cells is far cheaper than a wide Gaussian filter on a large image and gives the same
    kind of broad, soft variation.
    """
    coarse = rng.random((cells, cells)).astype(np.float32)
    height, width = shape
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    low, high = float(field.min()), float(field.max())
    return (field - low) / max(high - low, 1e-6)


def _splat(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, weights: np.ndarray) -> None:
    """Add point masses at sub-pixel positions with bilinear weights (anti-aliased, in place)."""
    height, width = canvas.shape
    keep = (ys > -1) & (ys < height) & (xs > -1) & (xs < width)
    ys, xs, weights = ys[keep], xs[keep], weights[keep]
    # Splatting into a canvas with a one-pixel margin needs no per-corner bounds checks.
    wide = width + 2
    y0 = np.floor(ys)
    x0 = np.floor(xs)
    fy = ys - y0
    fx = xs - x0
    base = (y0.astype(np.int64) + 1) * wide + x0.astype(np.int64) + 1
    padded = np.zeros((height + 2) * wide)
    for shift, share in ((0, (1 - fy) * (1 - fx)), (1, (1 - fy) * fx), (wide, fy * (1 - fx)), (wide + 1, fy * fx)):
        # bincount sums repeated indices like np.add.at, many times faster.
        padded += np.bincount(base + shift, weights * share, minlength=padded.size)
    canvas += padded.reshape(height + 2, wide)[1:-1, 1:-1].astype(canvas.dtype)


def _segments(
    shape: tuple[int, int],
    centres: np.ndarray,
    angles: np.ndarray,
    lengths: np.ndarray,
    intensities: np.ndarray,
    taper: bool,
    step: float = 0.25,
) -> np.ndarray:
    """Rasterise line segments (angle in radians from vertical) into a float canvas, anti-aliased.

    Each segment is sampled at most `step` pixels apart, each sample weighted by its spacing, so a
    one-pixel-wide line comes out with its own intensity whatever its angle. `taper` fades the ends, which
    makes rain streaks read as motion.
    """
    canvas = np.zeros(shape, dtype=np.float32)
    if len(lengths) == 0:
        return canvas
    # Ragged sampling (only points inside each segment): thousands of streaks on a large image stay cheap.
    counts = np.ceil(lengths / step).astype(np.int64) + 1
    owner = np.repeat(np.arange(len(lengths)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    along = (np.arange(counts.sum()) - first) / (counts[owner] - 1) * 2 - 1  # -1..1 within each segment
    offsets = along * lengths[owner] / 2
    weights = intensities[owner] * lengths[owner] / (counts[owner] - 1)
    if taper:
        weights = weights * np.sqrt(1 - along**2)
    ys = centres[owner, 0] + offsets * np.cos(angles[owner])
    xs = centres[owner, 1] + offsets * np.sin(angles[owner])
    _splat(canvas, ys, xs, weights)
    return canvas


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    """Normalised linear motion-blur kernel of `length` pixels at `angle` radians (odd, square)."""
    if length <= 1:
        return np.ones((1, 1), dtype=np.float32)
    size = 2 * int(np.ceil(length / 2)) + 1
    centre = np.array([[size // 2, size // 2]], dtype=np.float64)
    kernel = _segments((size, size), centre, np.array([angle]), np.array([length]), np.ones(1), taper=False)
    return kernel / kernel.sum()


def _disc_kernel(radius: float) -> np.ndarray:
    """A disc with a one-pixel soft rim, peak 1 (so a stamped point keeps its intensity)."""
    half = int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    return np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0).astype(np.float32)


def _convolve_rgb(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel with an odd kernel, reflecting at the borders so edges do not darken."""
    pad_y, pad_x = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(image, ((pad_y, pad_y), (pad_x, pad_x), (0, 0)), mode="symmetric")
    return fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))


def _flakes(rng: np.random.Generator, shape: tuple[int, int], count: int, radius: float, blur: float) -> np.ndarray:
    """Alpha map of `count` soft round flakes of about `radius` pixels at random places and opacities."""
    height, width = shape
    canvas = np.zeros(shape, dtype=np.float32)
    if count == 0:
        return canvas
    ys = rng.uniform(0, height - 1, count)
    xs = rng.uniform(0, width - 1, count)
    _splat(canvas, ys, xs, rng.uniform(0.6, 1.0, count))
    alpha = fftconvolve(canvas, _disc_kernel(radius), mode="same")
    return gaussian_filter(np.clip(alpha, 0.0, 1.0), blur)


# ------------------------------------------------------------------------------------------ degradations


def haze(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Atmospheric scattering I = J*t + A*(1-t), t = exp(-beta*d).

    Real depth is unknown, so the depth proxy grows towards the top (sky and far scenery usually sit there)
    and is perturbed by a low-frequency field so the haze is not a plain vertical gradient.
    """
    img = _checked(image, strength)
    height, width = img.shape[:2]
    towards_top = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None]
    depth = 0.1 + 0.6 * towards_top + 0.3 * _smooth_field(rng, (height, width))
    beta = strength * rng.uniform(0.8, 1.8)
    transmission = np.exp(-beta * depth)[:, :, None]
    # Airlight: bright and nearly grey, with a faint random tint as under real skies.
    airlight = np.clip(rng.uniform(0.8, 1.0) + rng.normal(0.0, 0.02, 3), 0.0, 1.0).astype(np.float32)
    return _finish(img * transmission + airlight * (1 - transmission))


def rain(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Thin slanted streaks around one wind direction, of random length and brightness, screened on."""
    img = _checked(image, strength)
    height, width = img.shape[:2]
    unit = _unit(img)
    count = round(float(strength) * height * width * 0.006)
    wind = rng.uniform(-0.35, 0.35)  # radians from vertical, about +-20 degrees
    centres = np.column_stack([rng.uniform(0, height, count), rng.uniform(0, width, count)])
    angles = wind + rng.normal(0.0, 0.04, count)
    lengths = rng.uniform(0.03, 0.12, count) * min(height, width)
    intensities = rng.uniform(0.3, 0.9, count)
    streaks = _segments((height, width), centres, angles, lengths, intensities, taper=True, step=0.5)
    # Thicker streaks on bigger images; a light blur also softens them like out-of-focus drops.
    streaks = gaussian_filter(streaks, max(0.4, 0.5 * unit))
    alpha = np.clip(streaks * 1.6, 0.0, 1.0)[:, :, None]
    colour = np.float32(rng.uniform(0.85, 1.0))
    # Screen blending only ever lightens, as light scattered by drops does.
    return _finish(1 - (1 - img) * (1 - alpha * colour))


def snow(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """White flakes of several sizes (many small and sharp, few large and blurred) over a slight veil."""
    img = _checked(image, strength)
    height, width = img.shape[:2]
    unit = _unit(img)
    area = height * width
    # (flakes per pixel, radius and blur in reference pixels): near flakes are big, sparse and out of focus.
    layers = ((0.004, 1.0, 0.3), (0.0015, 2.0, 0.6), (0.0004, 4.5, 1.2))
    alpha = np.zeros((height, width), dtype=np.float32)
    for density, radius, blur in layers:
        count = round(float(strength) * area * density)
        size = max(0.5, radius * unit * rng.uniform(0.8, 1.25))
        alpha = np.maximum(alpha, _flakes(rng, (height, width), count, size, max(0.3, blur * unit)))
    veil = min(0.5, strength * rng.uniform(0.04, 0.1))
    veiled = img * (1 - veil) + 0.9 * veil
    return _finish(veiled * (1 - alpha[:, :, None]) + alpha[:, :, None])


def blur(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Linear camera-shake motion blur with random length (1-3.5 % of the short side) and angle."""
    img = _checked(image, strength)
    length = strength * rng.uniform(0.01, 0.035) * min(img.shape[:2])
    kernel = _motion_kernel(length, rng.uniform(0.0, np.pi))
    return _finish(_convolve_rgb(img, kernel))


def lowlight(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Under-exposure: gamma > 1 crushes shadows, a gain below 1 dims all, then sensor noise.

    The noise is Poisson-Gaussian (variance a*x + b^2): shot noise grows with the signal and read noise
    floors the shadows, which is what makes real dark photos grainy.
    """
    img = _checked(image, strength)
    gamma = 1 + strength * rng.uniform(0.8, 1.8)
    gain = max(0.05, 1 - strength * rng.uniform(0.55, 0.8))
    dark = gain * img**gamma
    shot = strength * rng.uniform(0.001, 0.004)
    read = strength * rng.uniform(0.004, 0.012)
    noise = rng.standard_normal(img.shape).astype(np.float32) * np.sqrt(shot * dark + read**2)
    return _finish(dark + noise)


def noise(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Additive white Gaussian noise, sigma 10-25 on the 0-255 scale at strength 1."""
    img = _checked(image, strength)
    sigma = strength * rng.uniform(10, 25) / 255
    return _finish(img + sigma * rng.standard_normal(img.shape).astype(np.float32))


def jpeg(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Re-encode as JPEG through Pillow at quality 8-25 for strength 1 (higher strength, lower quality)."""
    img = _checked(image, strength)
    base = rng.uniform(8, 25)
    quality = int(np.clip(round(100 - strength * (100 - base)), 1, 100))
    buffer = io.BytesIO()
    to_image(img).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return _finish(to_array(decoded))


DEGRADATIONS: dict[str, Degradation] = {
    "haze": haze,
    "rain": rain,
    "snow": snow,
    "blur": blur,
    "lowlight": lowlight,
    "noise": noise,
    "jpeg": jpeg,
}

#: The Diff-Plugin task that undoes each degradation (None: no plugin targets it).
TASK_OF_DEGRADATION: dict[str, str | None] = {
    "haze": "dehaze",
    "rain": "derain",
    "snow": "desnow",
    "blur": "deblur",
    "lowlight": "lowlight",
    "noise": None,
    "jpeg": None,
}


# ------------------------------------------------------------------------------------------- PIL façade


def to_array(image: Image.Image) -> np.ndarray:
    """PIL image (any mode; alpha is dropped) -> float32 HxWx3 in [0, 1]."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def to_image(array: np.ndarray) -> Image.Image:
    """Float HxWx3 in [0, 1] -> 8-bit RGB PIL image (rounded, clipped)."""
    return Image.fromarray(np.round(np.clip(array, 0.0, 1.0) * 255).astype(np.uint8))


def validate_names(names: Sequence[str]) -> list[str]:
    """Return the names as a list, or raise `ValueError` naming the first unknown one and the valid ones."""
    # A bare string would otherwise be split into letters and fail confusingly on "h".
    listed = [names] if isinstance(names, str) else list(names)
    for name in listed:
        if name not in DEGRADATIONS:
            raise BadInput(f"unknown degradation {name!r}; valid names: {', '.join(DEGRADATIONS)}")
    return listed


def degrade(image: Image.Image, names: Sequence[str], seed: int = 0, strength: float = 1.0) -> Image.Image:
    """Apply the named degradations in order; the same image, names, seed and strength give the same result.

    Each step draws from its own stream derived from `seed` and its position, so adding a step at the end does
    not change what the earlier steps do. Returns an RGB image of the same size (alpha is dropped).
    """
    steps = validate_names(names)
    array = to_array(image)
    for name, stream in zip(steps, np.random.SeedSequence(seed).spawn(len(steps)), strict=True):
        array = DEGRADATIONS[name](array, np.random.default_rng(stream), strength)
    return to_image(array)
