"""One word for a plugin's state, the same in `diffplugin plugins list` and in the chat's plugin browser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from registry.kinds import kind_for

if TYPE_CHECKING:
    from registry.store import PluginStatus


def state_word(status: PluginStatus, base_pulled: bool | None = None) -> str:
    """The first of: disabled, needs --trust (installed without trusting its code), needs weights (the registry's
    only problems are missing weights), needs base model (a diffusion plugin, and the base model it runs on is not
    pulled; `base_pulled` when the caller knows, e.g. for a whole listing), ready."""
    if not status.enabled:
        return "disabled"
    if not status.trusted:
        return "needs --trust"
    if status.problems:
        return "needs weights"
    if kind_for(status.manifest).diffusion and not (base_model_pulled() if base_pulled is None else base_pulled):
        return "needs base model"
    return "ready"


def base_model_pulled() -> bool:
    """Whether the default base model (`diffplugin models pull`) is in the models folder, where the executor
    looks for it."""
    from assistant.paths import base_model_dir

    return base_model_dir().is_dir()
