"""The `diffplugin` plugin kind: a Task-Plugin (TPB + SCB weights) that runs inside the diffusion pipeline.

Registered with the registry when imported (`registry.kinds` imports it on the first lookup). Imports no torch
until a plugin is loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from plugins.diffplugin.layout import PLUGINS_FOLDER, TASK_PLUGIN_CONFIGS, TASK_PLUGIN_WEIGHTS
from registry.errors import InstallRefused
from registry.kinds import OptionValue, register_kind
from registry.manifest import MANIFEST_FILE, PluginManifest

if TYPE_CHECKING:
    import torch

    from plugins.diffplugin.plugin import TaskPlugin
    from plugins.diffplugin.scb import SCBNet
    from plugins.diffplugin.tpb import TPBNet
    from registry.discover import PluginRecord

_Branch = TypeVar("_Branch", "TPBNet", "SCBNet")


class DiffPluginKind:
    name = "diffplugin"
    runs_code = False
    diffusion = True

    def manifest_problem(self, manifest: PluginManifest) -> str | None:
        if len(manifest.tasks) != 1:
            return "a diffplugin plugin performs exactly one task"
        return None

    def check_files(self, manifest: PluginManifest, folder: Path) -> None:
        listed = {w.path for w in manifest.weights}
        for required in TASK_PLUGIN_WEIGHTS:
            if required not in listed:
                raise InstallRefused(folder / MANIFEST_FILE, f"a diffplugin plugin must list {required}",
                                     field="weights")
        for config in TASK_PLUGIN_CONFIGS:
            if not (folder / config).is_file():
                raise InstallRefused(folder / config, "missing (the TPB and SCB configs sit beside their weights)")

    def pulled_folder(self, manifest: PluginManifest, models_dir: Path) -> Path:
        return models_dir / PLUGINS_FOLDER / manifest.tasks[0]

    def pulled_problems(self, manifest: PluginManifest, models_dir: Path) -> list[str]:
        folder = self.pulled_folder(manifest, models_dir)
        if not all((folder / w).is_file() for w in TASK_PLUGIN_WEIGHTS):
            return [f"weights not downloaded: run `diffplugin models pull --task {manifest.tasks[0]}`"]
        return []

    def options(self, manifest: PluginManifest) -> dict[str, OptionValue]:
        return {}  # a Task-Plugin's run settings are the pipeline's, not options a plan sets per plugin

    def load(self, record: PluginRecord, weights_folder: Path, dtype: torch.dtype | None) -> TaskPlugin:
        """Read each weight file once, check those very bytes against the manifest, and build the branches from
        them (no loader gets to pick other files, and nothing can change between the check and the load)."""
        from safetensors.torch import load as load_safetensors

        from plugins.diffplugin.plugin import TaskPlugin
        from plugins.diffplugin.scb import SCBNet
        from plugins.diffplugin.settings import PluginSettings
        from plugins.diffplugin.tpb import TPBNet

        manifest = record.manifest
        expected = {w.path: (i, w.sha256) for i, w in enumerate(manifest.weights)}

        def branch(weights_path: str, model_class: type[_Branch]) -> _Branch:
            path = weights_folder / weights_path
            data = path.read_bytes()
            if weights_path in expected:
                index, sha256 = expected[weights_path]
                if hashlib.sha256(data).hexdigest() != sha256:
                    raise InstallRefused(path, "SHA-256 mismatch with the manifest; the file is damaged or was "
                                               "changed", field=f"weights.{index}.sha256")
            try:
                state = load_safetensors(data)
            except Exception as err:
                raise InstallRefused(path, f"not a safetensors file ({err})") from None
            config = json.loads((path.parent / "config.json").read_text())
            model: _Branch = model_class.from_config(config)  # type: ignore[assignment]  # a tuple with unused kwargs
            model.load_state_dict(state, strict=True)
            return model.to(dtype=dtype) if dtype is not None else model  # type: ignore[call-arg]  # see TaskPlugin.to

        tpb_path, scb_path = TASK_PLUGIN_WEIGHTS
        tpb, scb = branch(tpb_path, TPBNet), branch(scb_path, SCBNet)
        assert manifest.diffplugin is not None  # the manifest refuses a diffplugin plugin without its section
        spec = manifest.diffplugin.model_dump(exclude={"base"})
        return TaskPlugin(tpb, scb, PluginSettings(task=manifest.tasks[0], **spec))


register_kind(DiffPluginKind())
