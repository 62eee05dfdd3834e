"""Writing a manifest for a plugin folder: the SHA-256 of every weight file, and the run settings of a
Diff-Plugin folder, filled in so authors need not compute them by hand (`diffplugin plugins init`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from plugins.errors import FileInTheWay
from registry.files import sha256_file
from registry.manifest import MANIFEST_FILE, dump_manifest, validate_manifest

SETTINGS_FILE = "plugin.json"  # written beside the weights by training and conversion


def weight_entries(folder: Path) -> list[dict[str, str]]:
    return [{"path": p.relative_to(folder).as_posix(), "sha256": sha256_file(p)}
            for p in sorted(folder.rglob("*.safetensors"))]


def init_manifest(folder: str | Path, overwrite: bool = False, **fields: Any) -> Path:
    """Write `folder/diffplugin.yaml` from `fields` plus what the folder says about itself.

    A folder holding `plugin.json` (a Task-Plugin from training or conversion) becomes a `diffplugin` plugin
    with that task and those settings; otherwise pass `kind="python"` and `python={"entry_point": ...}`.
    """
    folder = Path(folder)
    target = folder / MANIFEST_FILE
    if target.exists() and not overwrite:
        raise FileInTheWay(f"{target} exists; pass --overwrite to write it again (e.g. after new weights)")
    data: dict[str, Any] = {k: v for k, v in fields.items() if v not in (None, [], {})}
    settings_file = folder / SETTINGS_FILE
    if settings_file.is_file() and data.get("kind", "diffplugin") == "diffplugin":
        settings = json.loads(settings_file.read_text())
        data.setdefault("kind", "diffplugin")
        data.setdefault("tasks", [settings.pop("task")])
        data.setdefault("diffplugin", {k: v for k, v in settings.items() if k != "task"})
    data["weights"] = weight_entries(folder)
    manifest = validate_manifest(data, target)
    target.write_text(dump_manifest(manifest), encoding="utf-8")
    return target
