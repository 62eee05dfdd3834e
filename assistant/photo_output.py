"""Writing a result photo safely: never over the input, never over an existing file unless asked, atomically,
with the plan that made it recorded in the file (PNG text chunk) and beside it (a .plan.yaml sidecar)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import PIL.Image
from PIL.PngImagePlugin import PngInfo

from assistant.planning.plan import Plan
from plugins.atomic_files import write_atomic, write_together
from plugins.errors import DiffPluginError

PLAN_KEY = "diffplugin:plan"


class OutputError(DiffPluginError, ValueError):
    """An output path the command may not write, or a write that failed (nothing was written then)."""


class OutputTaken(OutputError):
    """The output appeared while the command ran (another command writing there)."""


#: What a plan may be saved as (`Plan.save` writes JSON for .json, YAML for the others).
PLAN_SUFFIXES = (".yaml", ".yml", ".json")


def check_output(output: Path, inputs: Iterable[Path], overwrite: bool, kind: Literal["photo", "plan"] = "photo",
                 with_plan: bool = False) -> None:
    """Refuse, before any work, an output the command may not write: an input, an existing file (without
    `overwrite`), a folder, a file in a folder that cannot be written or is a file, or a name of the wrong type.
    Every file written for a user is checked here first. `with_plan`: the plan's sidecar is checked too."""
    inputs = list(inputs)
    for path in [output, sidecar(output)] if with_plan else [output]:
        for source in inputs:
            if same_file(path, source):
                what = "plan" if source.suffix.lower() in PLAN_SUFFIXES else "photo"
                raise OutputError(f"{path}: that is the input {what}; choose another output (writing there would "
                                  f"overwrite the {what})")
        if path.is_dir():
            raise OutputError(f"{path} is a folder; name a file to write")
        if os.path.lexists(path) and not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
    suffixes = PLAN_SUFFIXES if kind == "plan" else tuple(PIL.Image.registered_extensions())
    if output.suffix.lower() not in suffixes:
        raise OutputError(f"{output}: unknown {'plan' if kind == 'plan' else 'image'} type '{output.suffix}'; "
                          f"use {'.yaml or .json' if kind == 'plan' else '.png, .jpg, .webp or .tif'}")
    check_folder(output.parent)


def check_folder(folder: Path) -> None:
    """Refuse a folder that files cannot be written into: what exists of it must be a folder this user may write
    (the rest is created)."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{existing} is a file, not a folder; choose another output")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write in {existing} (read-only or not yours); choose another output folder")


def same_file(a: Path, b: Path) -> bool:
    """The same file or folder, also through links and on case-insensitive file systems (macOS, Windows)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def sidecar(output: Path) -> Path:
    return output.with_name(output.name + ".plan.yaml")


def save_result(image: PIL.Image.Image, output: Path, plan: Plan | None = None, overwrite: bool = True) -> list[Path]:
    """Write `image` and the plan's sidecar: both or neither (the photo is placed first). Without `overwrite`,
    a file that appeared since `check_output` is never replaced (OutputTaken). Returns the paths written."""
    fmt = PIL.Image.registered_extensions()[output.suffix.lower()]
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if plan is not None and fmt == "PNG":
        info = PngInfo()
        info.add_text(PLAN_KEY, json.dumps(plan.to_json()))
        options["pnginfo"] = info
    if fmt == "JPEG":
        options["quality"] = 95
    image.convert("RGB").save(buffer, format=fmt, **options)
    files = {output: buffer.getvalue()}
    if plan is not None:
        files[sidecar(output)] = plan.dumps("yaml").encode()
    with writing(list(files)):
        write_together(files, overwrite)
    return list(files)


def save_plan(plan: Plan, output: Path, overwrite: bool) -> Path:
    """Write a plan file (check it with `check_output(..., kind="plan")` before the work)."""
    with writing([output]):
        return plan.save(output, overwrite)


def save_text(output: Path, text: str, overwrite: bool) -> Path:
    """Write a text file for the user (a report, a policy); check it with `check_output` before the work."""
    with writing([output]):
        write_atomic(output, text.encode("utf-8"), overwrite)
    return output


@contextmanager
def writing(paths: list[Path]) -> Iterator[None]:
    """A failed write as one line: a full disk, a folder made read-only meanwhile, a name taken meanwhile."""
    try:
        yield
    except OSError as err:
        name = err.filename2 or err.filename
        if isinstance(err, FileExistsError) and name is not None and Path(name) in paths:
            raise OutputTaken(f"{name} was created by something else while this ran; nothing was written or "
                              "replaced: choose another output, or pass --overwrite") from None
        raise OutputError(f"cannot write {paths[0]}: {err.strerror or err}; nothing was written") from None


def plan_of(photo: Path) -> Plan | None:
    """The plan recorded in a PNG written by diffplugin, if any."""
    with PIL.Image.open(photo) as opened:
        text = getattr(opened, "text", {}).get(PLAN_KEY)
    return Plan.parse(text.encode("utf-8"), "JSON", f"{photo} (its recorded plan)") if text else None


def recorded_plan(photo: Path) -> Plan | None:
    """`plan_of` for a file that may be anyone's: None when it is not a file, not an image or not ours."""
    if not photo.is_file():
        return None
    try:
        return plan_of(photo)
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError):
        return None
