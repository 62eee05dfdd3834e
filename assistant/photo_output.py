"""Writing a result photo safely: never over the input, never over an existing file unless asked, atomically,
with the plan that made it recorded in the file (PNG text chunk) and beside it (a .plan.yaml sidecar)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import PIL.Image
from PIL.PngImagePlugin import PngInfo

from assistant.planning.plan import Plan, write_atomic

PLAN_KEY = "diffplugin:plan"


class OutputError(ValueError):
    """An output path the command may not write."""


def check_output(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse, before any work, an output that is an input, exists (without `overwrite`), or has no image type."""
    for source in inputs:
        if same_file(output, source):
            raise OutputError(f"{output}: that is the input photo; choose another output (writing there would "
                              "overwrite the photo)")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} exists; pass --overwrite to replace it")
    if output.suffix.lower() not in PIL.Image.registered_extensions():
        raise OutputError(f"{output}: unknown image type '{output.suffix}'; use .png, .jpg, .webp or .tif")


def same_file(a: Path, b: Path) -> bool:
    """The same file or folder, also through links and on case-insensitive file systems (macOS, Windows)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".plan.yaml")


def save_result(image: PIL.Image.Image, output: Path, plan: Plan | None = None) -> list[Path]:
    """Write `image` (and the plan's sidecar) atomically; returns the paths written."""
    fmt = PIL.Image.registered_extensions()[output.suffix.lower()]
    buffer = io.BytesIO()
    options = {}
    if plan is not None and fmt == "PNG":
        info = PngInfo()
        info.add_text(PLAN_KEY, json.dumps(plan.to_json()))
        options["pnginfo"] = info
    if fmt == "JPEG":
        options["quality"] = 95
    image.convert("RGB").save(buffer, format=fmt, **options)
    written = []
    if plan is not None:
        written.append(plan.save(sidecar(output)))
    write_atomic(output, buffer.getvalue())
    return [output, *written]


def plan_of(photo: Path) -> Plan | None:
    """The plan recorded in a PNG written by diffplugin, if any."""
    with PIL.Image.open(photo) as opened:
        text = getattr(opened, "text", {}).get(PLAN_KEY)
    return Plan.model_validate_json(text) if text else None
