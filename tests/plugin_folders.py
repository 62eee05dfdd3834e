"""Plugin folders for registry tests: a real tiny Task-Plugin and the example python plugin."""

from __future__ import annotations

import shutil
from pathlib import Path

from registry.authoring import init_manifest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = ROOT / "examples" / "plugins" / "acme-sharpen"


def diffplugin_folder(dest: Path, pipe, plugin_id: str = "acme/derain-tiny", version: str = "1.0.0",
                      task: str = "derain", license_id: str = "Apache-2.0") -> Path:
    """A tiny Task-Plugin folder for `pipe` with a manifest that lists its weights' SHA-256."""
    from plugins.diffplugin.plugin import TaskPlugin

    TaskPlugin.for_base(pipe.unet, pipe.image_encoder, task, seed=0).save_pretrained(dest)
    init_manifest(dest, id=plugin_id, version=version, name="Tiny derain",
                  description="A tiny random derain plugin for tests.",
                  examples=["remove the rain", "get rid of rain streaks", "it is raining in my photo"],
                  license=license_id, authors=[{"name": "Test Author"}])
    return dest


def python_folder(dest: Path, version: str | None = None) -> Path:
    shutil.copytree(EXAMPLE_PLUGIN, dest)
    if version:
        manifest = dest / "diffplugin.yaml"
        manifest.write_text(manifest.read_text().replace("version: 1.0.0", f"version: {version}"))
    return dest


#: A code plugin for a task the selector was never trained on: the colour negative of a photo.
NEGATIVE_MANIFEST = """schema_version: "1.0"
id: acme/negative
version: 1.0.0
name: Photo negative
description: Turns a photo into its colour negative.
tasks: [negative]
examples: [make a negative of the photo, invert the colours, turn it into a film negative]
kind: python
python: {entry_point: "negative:negative"}
license: MIT
authors: [{name: Test Author}]
"""
NEGATIVE_CODE = "from PIL import ImageOps\n\n\ndef negative(image):\n    return ImageOps.invert(image.convert('RGB'))\n"


def code_folder(dest: Path, manifest: str = NEGATIVE_MANIFEST, code: str = NEGATIVE_CODE) -> Path:
    """A code plugin folder: the manifest, and the module its entry point names."""
    module = manifest.split('entry_point: "', 1)[1].split(":", 1)[0]
    dest.mkdir(parents=True)
    (dest / "diffplugin.yaml").write_text(manifest)
    (dest / f"{module}.py").write_text(code)
    return dest
