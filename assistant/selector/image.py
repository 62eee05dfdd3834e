"""Selecting with the photo too: the paper's selector (CLIP text encoder + each diffusion plugin's Task-Prompt
Branch on the photo, spec §5) where its weights have been pulled, the offline selector for everything else.

The paper's model decides for the tasks it has plugins for (it sees the photo); the offline selector decides for
the others and gives the order the user named things in. Without the pulled weights, selection is the offline
one with a note saying the photo was not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from assistant.selector.model import OfflineSelector, SelectedPlugin, Selection
from registry.kinds import kind_for

if TYPE_CHECKING:
    from plugins.diffplugin.selector import PaperSelector
    from registry.store import Registry

#: Where `diffplugin models pull` puts what the paper's selector needs, under the models folder.
SELECTOR_PARTS = ("base", "plugin_selector", "selector_text")


class ImageAwareSelector:
    mode = "paper+offline"

    def __init__(self, offline: OfflineSelector, paper: PaperSelector,
                 prompts: dict[str, tuple[str, torch.Tensor]]) -> None:
        self.offline = offline
        self.candidates = offline.candidates
        self.paper = paper
        self.prompts = prompts  # task -> (plugin id, TPB tokens of the photo)

    def select(self, text: str) -> Selection:
        base = self.offline.select(text)
        picked = dict(self.paper.select(text, {task: tokens for task, (_, tokens) in self.prompts.items()}))
        kept = [p for p in base.plugins if p.task not in self.prompts or p.task in picked]
        for plugin in kept:  # the plugin the photo was judged with is the one to run
            if plugin.task in self.prompts:
                plugin.id = self.prompts[plugin.task][0]
        named = {p.task for p in kept}
        extra = [SelectedPlugin(self.prompts[task][0], task, float(score), -1)
                 for task, score in picked.items() if task not in named]
        dropped = [p.task for p in base.plugins if p not in kept]
        notes = [*base.notes, *([f"the photo does not show {', '.join(dropped)}; left out"] if dropped else [])]
        return Selection(kept + extra, base.clauses, self.mode, notes)


def with_image(offline: OfflineSelector, image: Path, store: Registry, models: Path
               ) -> OfflineSelector | ImageAwareSelector:
    from plugins.data.photos import load_photo

    photo = load_photo(image)  # a bad photo is the user's error even when the photo cannot be used
    missing = [part for part in SELECTOR_PARTS if not (models / part).is_dir()]
    diffusion = [c for c in offline.candidates if _runnable_diffusion(store, c.id)]
    if missing or not diffusion:
        why = (f"{', '.join(missing)} not found in {models} (`diffplugin models pull`)" if missing
               else "no diffusion plugin with weights is enabled")
        offline.notes = [f"the photo was not used: {why}"]
        return offline
    from assistant.paths import base_model_dir
    from plugins.diffplugin.pipeline import DiffPluginPipeline
    from plugins.diffplugin.plugin import TaskPlugin
    from plugins.diffplugin.selector import PaperSelector
    from registry.runtime import load_plugin

    pipe = DiffPluginPipeline.from_pretrained(base_model_dir(models))
    paper = PaperSelector.from_pretrained(models / "plugin_selector", models / "selector_text")
    with torch.no_grad():
        tokens = pipe.encode_clip_tokens(photo)
        prompts: dict[str, tuple[str, torch.Tensor]] = {}
        for candidate in diffusion:
            plugin = load_plugin(store, candidate.id)
            assert isinstance(plugin, TaskPlugin)  # a diffusion candidate
            prompts.setdefault(candidate.task, (candidate.id, plugin.tpb(tokens.to(plugin.tpb.dtype))[0]))
    return ImageAwareSelector(offline, paper, prompts)


def _runnable_diffusion(store: Registry, plugin_id: str) -> bool:
    status = store.get(plugin_id)
    return status.runnable and kind_for(status.manifest).diffusion
