"""Degradations that `plugins.data.degradations` lacks, so the moire and highlight plugins can be measured the
way the others are (tests and benchmarks/builtin_plugins.py): clean photo in, degraded copy out, seeded."""

from __future__ import annotations

import numpy as np
from PIL import Image

from plugins.builtin._common import to_array, to_image


def moire(image: Image.Image, seed: int = 0, strength: float = 1.0) -> Image.Image:
    """Screen moire: two interfering gratings whose phase differs per colour channel (the rainbow ripples of a
    photographed display), with a gentle amplitude variation across the frame."""
    rng = np.random.default_rng(seed)
    array = to_array(image)
    height, width = array.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pattern = np.zeros_like(array)
    for _ in range(2):
        period = rng.uniform(4.0, 10.0)
        angle = rng.uniform(0, np.pi)
        phase = (x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period)
        offsets = rng.uniform(0, 2 * np.pi) + np.array([0.0, 2.1, 4.2], dtype=np.float32)
        pattern += np.sin(phase[:, :, None] + offsets)
    envelope = 0.6 + 0.4 * np.cos(2 * np.pi * (x / width * rng.uniform(0.5, 1.5) + rng.uniform(0, 1)))
    return to_image(array + strength * 0.06 * pattern * envelope[:, :, None])


def specular(image: Image.Image, seed: int = 0, strength: float = 1.0) -> Image.Image:
    """White specular highlights (dichromatic model: I = J (1 - a) + a, the light's colour added on top): a few
    soft glints of random size, some of them clipped to white in the middle as on real shiny surfaces."""
    rng = np.random.default_rng(seed)
    array = to_array(image)
    height, width = array.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    alpha = np.zeros((height, width), dtype=np.float32)
    for _ in range(rng.integers(4, 8)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        sy, sx = rng.uniform(0.01, 0.04, 2) * min(height, width)
        blob = np.exp(-0.5 * (((y - cy) / sy) ** 2 + ((x - cx) / sx) ** 2))
        alpha = np.maximum(alpha, np.clip(rng.uniform(0.6, 1.3) * blob, 0.0, 1.0))
    alpha = np.clip(strength * alpha, 0.0, 1.0)[:, :, None]
    return to_image(array * (1 - alpha) + alpha)
