"""A Task-Plugin on disk and in memory: a TPB, an SCB and the settings that say how to run them.

Folder layout (what `save_pretrained` writes and `from_pretrained` reads)::

    <plugin>/plugin.json                               task, start mode, default steps
    <plugin>/tpb/config.json                           TPBNet config
    <plugin>/tpb/diffusion_pytorch_model.safetensors   official tensor names (visual_projection.*)
    <plugin>/scb/config.json                           SCBNet config
    <plugin>/scb/diffusion_pytorch_model.safetensors   official tensor names (controlnet_*, down_blocks.0.*, ...)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.settings import PluginSettings
from plugins.diffplugin.tpb import TPBNet
from plugins.errors import BadInput, MissingFile

if TYPE_CHECKING:
    # diffusers' top level shows type checkers placeholder classes: the defining modules give the real ones
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPVisionModel

SETTINGS_FILE = "plugin.json"
TPB_FOLDER = "tpb"
SCB_FOLDER = "scb"

class TaskPlugin:
    """One Diff-Plugin Task-Plugin: `tpb`, `scb` and `settings`."""

    def __init__(self, tpb: TPBNet, scb: SCBNet, settings: PluginSettings) -> None:
        self.tpb = tpb
        self.scb = scb
        self.settings = settings

    def __repr__(self) -> str:
        return f"TaskPlugin(task={self.task!r}, start={self.settings.start!r}, params={self.num_parameters():,})"

    @property
    def task(self) -> str:
        return self.settings.task

    def num_parameters(self) -> int:
        return sum(p.numel() for m in (self.tpb, self.scb) for p in m.parameters())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TaskPlugin:
        """Move both branches; a no-op when they are already there (diffusers warns on every dtype cast)."""
        for module in (self.tpb, self.scb):
            if device is not None and module.device != torch.device(device):
                module.to(device=device)  # type: ignore[call-arg]  # typeshed's functools.wraps loses `self`
            if dtype is not None and module.dtype != dtype:
                module.to(dtype=dtype)  # type: ignore[call-arg]  # (diffusers wraps ModelMixin.to)
        return self

    @classmethod
    def for_base(
        cls, unet: UNet2DConditionModel, image_encoder: CLIPVisionModel, task: str, seed: int | None = None
    ) -> TaskPlugin:
        """A new, untrained plugin whose shapes fit `unet` and `image_encoder` (zero-initialised output convs)."""
        heads = unet.config["attention_head_dim"]
        heads = heads[0] if isinstance(heads, (list, tuple)) else heads
        if seed is None:
            return cls._build(unet, image_encoder, task, heads)
        with torch.random.fork_rng(devices=[]):  # a seeded plugin must not disturb the caller's random stream
            torch.manual_seed(seed)
            return cls._build(unet, image_encoder, task, heads)

    @classmethod
    def _build(cls, unet: UNet2DConditionModel, image_encoder: CLIPVisionModel, task: str, heads: int) -> TaskPlugin:
        tpb = TPBNet(
            clip_v_dim=image_encoder.config.hidden_size, cross_attention_dim=unet.config["cross_attention_dim"]
        )
        scb = SCBNet(
            in_channels=unet.config["in_channels"],
            block_out_channels=(unet.config["block_out_channels"][0],),
            layers_per_block=unet.config["layers_per_block"],
            cross_attention_dim=unet.config["cross_attention_dim"],
            attention_head_dim=heads,
            norm_num_groups=unet.config["norm_num_groups"],
            norm_eps=unet.config["norm_eps"],
        )
        return cls(tpb, scb, PluginSettings.for_task(task))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None,
                        settings: PluginSettings | None = None) -> TaskPlugin:
        """Load `path`; its `plugin.json` gives the settings unless `settings` is passed (e.g. from a manifest)."""
        path = Path(path)
        settings_file = path / SETTINGS_FILE
        if settings is None:
            if not settings_file.is_file():
                raise MissingFile(
                    f"{path} is not a Task-Plugin folder: {SETTINGS_FILE} is missing. Official releases must be "
                    "converted first: `diffplugin models convert OFFICIAL_DIR -o OUT`."
                )
            settings = PluginSettings.model_validate_json(settings_file.read_text())
        tpb = TPBNet.from_pretrained(path / TPB_FOLDER, dtype=dtype)
        scb = SCBNet.from_pretrained(path / SCB_FOLDER, dtype=dtype)
        return cls(tpb, scb, settings)

    def save_pretrained(self, path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tpb.save_pretrained(path / TPB_FOLDER, safe_serialization=True)
        self.scb.save_pretrained(path / SCB_FOLDER, safe_serialization=True)
        (path / SETTINGS_FILE).write_text(json.dumps(self.settings.model_dump(), indent=2) + "\n")
        return path


def check_compatible(plugin: TaskPlugin, unet: UNet2DConditionModel, image_encoder: CLIPVisionModel) -> None:
    """Raise a ValueError that names the mismatch when `plugin` cannot run on this base model."""
    problems = []
    tpb, scb = plugin.tpb.config, plugin.scb.config
    if tpb["clip_v_dim"] != image_encoder.config.hidden_size:
        problems.append(f"TPB expects {tpb['clip_v_dim']}-d CLIP tokens, the image encoder gives "
                        f"{image_encoder.config.hidden_size}")
    if tpb["cross_attention_dim"] != unet.config["cross_attention_dim"]:
        problems.append(f"TPB prompt width {tpb['cross_attention_dim']} != UNet cross_attention_dim "
                        f"{unet.config['cross_attention_dim']}")
    if scb["cross_attention_dim"] != tpb["cross_attention_dim"]:
        problems.append(f"SCB cross_attention_dim {scb['cross_attention_dim']} != TPB width "
                        f"{tpb['cross_attention_dim']}")
    if scb["block_out_channels"][0] != unet.config["block_out_channels"][0]:
        problems.append(f"SCB width {scb['block_out_channels'][0]} != UNet first block width "
                        f"{unet.config['block_out_channels'][0]}")
    if scb["layers_per_block"] != unet.config["layers_per_block"]:
        problems.append(f"SCB gives {scb['layers_per_block'] + 1} residuals, the UNet has "
                        f"{unet.config['layers_per_block'] + 1} full-resolution skips")
    if scb["in_channels"] != unet.config["in_channels"]:
        problems.append(f"SCB takes {scb['in_channels']}-channel latents, the UNet {unet.config['in_channels']}")
    if problems:
        raise BadInput(f"plugin '{plugin.task}' does not fit this base model: " + "; ".join(problems))
