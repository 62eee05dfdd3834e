"""CLIP-FID and KID as the paper's scripts compute them: clean-fid, `model_name="clip_vit_b_32"`, `mode="clean"`,
outputs against a folder of clean reference photos (spec §7).

clean-fid needs OpenAI's `clip` package and torchvision, and downloads the ViT-B/32 weights on first use. This
project keeps torchvision out of its own install (PyPI's build breaks beside the CPU torch wheel), so these are
an opt-in for machines that have them. Without them, a result says exactly what is missing instead of a number.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

#: Where OpenAI's `clip.load("ViT-B/32")` keeps its weights (its default download root).
CLIP_WEIGHTS = Path("~/.cache/clip/ViT-B-32.pt").expanduser()


def missing() -> list[str]:
    """What CLIP-FID/KID need that this machine lacks (empty when they can run)."""
    needs = []
    for module, package in (("cleanfid", "clean-fid"), ("clip", "openai-clip"), ("torchvision", "torchvision")):
        if importlib.util.find_spec(module) is None:
            needs.append(f"the {package} package")
    if not CLIP_WEIGHTS.is_file():
        needs.append(f"the CLIP ViT-B/32 weights at {CLIP_WEIGHTS} (clip.load('ViT-B/32') downloads them once)")
    return needs


def clip_fid_kid(outputs: Path, reference: Path, device: str | None = None) -> dict[str, Any]:
    """{"clip_fid": ..., "kid": ...} for the images in `outputs` against `reference`, or {"error": why not}."""
    if not reference.is_dir():
        return {"error": f"{reference}: not a folder of clean reference photos"}
    lacking = missing()
    if lacking:
        return {"error": "CLIP-FID/KID not computed: this machine lacks " + "; ".join(lacking)}
    import torch
    from cleanfid import fid

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = {"mode": "clean", "model_name": "clip_vit_b_32", "device": torch.device(device)}
    return {"clip_fid": float(fid.compute_fid(str(outputs), str(reference), **options)),
            "kid": float(fid.compute_kid(str(outputs), str(reference), mode="clean", device=torch.device(device))),
            "reference": str(reference), "method": "clean-fid clip_vit_b_32, mode=clean (KID: inception, as "
                                                   "clean-fid computes it)"}
