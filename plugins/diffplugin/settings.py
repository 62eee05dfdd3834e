"""How a Task-Plugin runs (task, start mode, steps). Pydantic only, so manifests can use it without torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: The official tasks that start denoising from pure noise instead of the noised input (spec §6).
PURE_NOISE_TASKS = frozenset({"lowlight", "highlight"})

StartMode = Literal["noised-input", "noise"]


class PluginSettings(BaseModel):
    """How a plugin is run. Stored as `plugin.json` beside the weights, and in a manifest's `diffplugin` table."""

    model_config = ConfigDict(extra="forbid")

    task: str = Field(description="Task id, e.g. 'derain'.", min_length=1)
    start: StartMode = Field(
        "noised-input",
        description="'noised-input': the start latent is the noised degraded latent (t >= time_threshold); "
        "'noise': start from pure noise (lowlight, highlight).",
    )
    num_inference_steps: int = Field(20, ge=1, description="Denoising steps when the plugin runs first.")
    time_threshold: int = Field(960, ge=0, description="Timesteps at or above this start from the noised input.")

    @classmethod
    def for_task(cls, task: str) -> PluginSettings:
        return cls(task=task, start="noise" if task in PURE_NOISE_TASKS else "noised-input")
