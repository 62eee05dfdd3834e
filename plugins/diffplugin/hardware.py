"""Which device and dtype to run on when the caller does not say."""

from __future__ import annotations

import torch

from plugins.errors import BadInput


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """`device` if given, else CUDA, then Apple MPS, then CPU."""
    if device is not None:
        try:
            return torch.device(device)
        except RuntimeError:  # a name torch does not know: the user's --device, not a bug
            raise BadInput(f"device {str(device)!r} is unknown; use cuda, cuda:N, mps or cpu") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA, fp32 elsewhere (fp16 convolutions are slow or missing on CPU)."""
    return torch.float16 if device.type == "cuda" else torch.float32

