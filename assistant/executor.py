"""Running plugins on a photo, in process: the one place `apply`, `run` and `edit` execute plugin chains.

Consecutive diffusion plugins run as one pipeline call (CLIP features of that chain's input, 3 steps after the
first, as the official chain does); code plugins run on the image between them. The base model loads only when a
diffusion plugin is in the chain, once per executor, and stays resident for later calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image

from assistant.plugin_cache import PluginCache, cache_key

Progress = Callable[[int, int, str], None]  # (steps done, steps in all, what runs now)


class ExecutorError(ValueError):
    """A step that cannot run, with what to do about it."""


@dataclass
class DiffusionSettings:
    base: str | None = None  # folder or hub id; default: the pulled base in the models folder
    image_encoder: str = "openai/clip-vit-large-patch14"
    device: str | None = None
    steps: int | None = None
    chain_steps: int = 3
    seed: int = 42
    short_side: int = 512
    resize: str = "min"
    quiet: bool = False


@dataclass
class Executor:
    """Holds the base model once it is loaded, so a second plan or chain does not load it again."""

    settings: DiffusionSettings = field(default_factory=DiffusionSettings)
    pipe: Any = None
    plugins: PluginCache = field(default_factory=PluginCache)

    def load(self, ref: str, registry: Any) -> Any:
        """A plugin folder or registered id, from the cache when it was loaded before with the same bytes."""
        if (Path(ref) / "plugin.json").is_file() or "/" not in ref:
            return load_step(ref, registry)
        from registry.runtime import runnable_status

        plugin_id, _, version = ref.partition("@")
        status = runnable_status(registry, plugin_id, version or None)  # disabled since? refused even if cached
        return self.plugins.get(cache_key(status), lambda: load_step(ref, registry))

    def run(self, image: PIL.Image.Image, loaded: Sequence[Any], params: Sequence[dict[str, Any]] | None = None,
            progress: Progress | None = None) -> PIL.Image.Image:
        """Run `loaded` plugins (TaskPlugin or PythonPlugin) in order; `params[i]` are step i's options."""
        params = list(params) if params is not None else [{} for _ in loaded]
        result, done = image, 0
        for group in diffusion_runs(list(zip(loaded, params, strict=True))):
            if not isinstance(group, list):
                plugin, options = group
                if progress:
                    progress(done, len(loaded), plugin.manifest.id)
                result = plugin(result, **options)
                done += 1
                continue
            if progress:
                progress(done, len(loaded), " + ".join(p.task for p, _ in group))
            result = self._diffuse(result, group)
            done += len(group)
        if progress:
            progress(done, len(loaded), "done")
        return result

    def _diffuse(self, image: PIL.Image.Image, group: list[tuple[Any, dict[str, Any]]]) -> PIL.Image.Image:
        import torch

        options = group[0][1]
        pipe = self.base()
        s = self.settings
        return pipe(image, [plugin for plugin, _ in group],
                    num_inference_steps=options.get("steps", s.steps), chain_num_inference_steps=s.chain_steps,
                    generator=torch.Generator().manual_seed(int(options.get("seed", s.seed))),
                    short_side=s.short_side, resize_mode=s.resize).images[0]

    def base(self) -> Any:
        if self.pipe is None:
            from assistant.paths import models_dir
            from plugins.diffplugin.pipeline import DiffPluginPipeline

            base = self.settings.base
            if base is None:
                base_dir = models_dir() / "base"
                if not base_dir.is_dir():
                    raise ExecutorError(f"no base model at {base_dir}: run `diffplugin models pull` or pass --base.")
                base = str(base_dir)
            self.pipe = DiffPluginPipeline.from_base(base, self.settings.image_encoder, device=self.settings.device)
            self.pipe.set_progress_bar_config(disable=self.settings.quiet)
        return self.pipe


def diffusion_runs(steps: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    """Consecutive diffusion plugins grouped into lists (one pipeline call each); code plugins alone."""
    from registry.runtime import PythonPlugin

    runs: list[Any] = []
    for step in steps:
        if isinstance(step[0], PythonPlugin):
            runs.append(step)
        elif runs and isinstance(runs[-1], list):
            runs[-1].append(step)
        else:
            runs.append([step])
    return runs


def load_step(ref: str, registry: Any) -> Any:
    """A Task-Plugin folder (it holds plugin.json), else a registered plugin id (checked: enabled, trusted,
    weights' SHA-256)."""
    if (Path(ref) / "plugin.json").is_file():
        from plugins.diffplugin.plugin import TaskPlugin

        return TaskPlugin.from_pretrained(ref)
    if "/" not in ref:
        raise ExecutorError(f"{ref}: neither a plugin folder (with plugin.json) nor a plugin id (namespace/name)")
    from registry.runtime import load_plugin

    plugin_id, _, version = ref.partition("@")
    return load_plugin(registry, plugin_id, version or None)
