"""The plugins a selector chooses among: the registry's enabled plugins, one candidate per task they serve."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from assistant.selector.model import Candidate

if TYPE_CHECKING:
    from registry.manifest import PluginManifest
    from registry.store import Registry


def registry_candidates(registry: Registry) -> list[Candidate]:
    """Enabled plugins, those that can run now first; any not shipped with diffplugin counts as installed."""
    statuses = sorted((s for s in registry.plugins() if s.enabled), key=lambda s: not s.runnable)
    return [Candidate(s.id, task, examples_of(s.manifest), s.runnable, installed=not s.active.builtin)
            for s in statuses for task in s.manifest.tasks]


def examples_of(manifest: PluginManifest) -> tuple[str, ...]:
    """A manifest's example requests, and the first sentence of its description ("Removes moire patterns, the
    coloured ripples seen when photographing screens."), which often names the symptom the examples do not."""
    first = re.split(r"(?<=[.!?])\s", manifest.description.strip(), maxsplit=1)[0]
    return (*manifest.examples, first) if first else tuple(manifest.examples)


def task_of(ref: str, candidates: list[Candidate]) -> str:
    """An evaluation file's `expect` entry as a task: a plugin id's task, else the entry itself (a task name)."""
    for candidate in candidates:
        if candidate.id == ref:
            return candidate.task
    return ref
