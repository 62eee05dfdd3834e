"""Write files exactly as the official Diff-Plugin release publishes them (random weights)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.selector import SelectorHeads

# The keys of an official scb/config.json (diffusers 0.17 ControlNet-style), including the unused extras that
# seven of the eight released configs carry.
OFFICIAL_SCB_CONFIG_EXTRAS = {
    "_class_name": "SCBNet",
    "_diffusers_version": "0.17.1",
    "class_embed_type": None,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "downsample_padding": 1,
    "global_pool_conditions": False,
    "mid_block_scale_factor": 1,
    "num_class_embeds": None,
    "projection_class_embeddings_input_dim": None,
    "resnet_time_scale_shift": "default",
    "concat_input": False,
    "enable_mask": False,
    "use_vae_conditioning": True,
    "vae_cond_in_channels": 4,
    "way_to_concat": "channel",
}


# pre-trained/lowlight/scb/config.json as published (no _class_name; the unused extra keys).
OFFICIAL_LOWLIGHT_SCB_CONFIG = {
    "_diffusers_version": "0.17.1",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320],
    "class_embed_type": None,
    "concat_input": False,
    "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb",
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "enable_mask": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "global_pool_conditions": False,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "projection_class_embeddings_input_dim": None,
    "resnet_time_scale_shift": "default",
    "upcast_attention": False,
    "use_linear_projection": False,
    "use_vae_conditioning": True,
    "vae_cond_in_channels": 4,
    "way_to_concat": "cat",
}


def write_official_task(folder: Path, plugin: TaskPlugin, module_prefix: bool = False) -> Path:
    """`folder/scb/{config.json, diffusion_pytorch_model.bin}` and `folder/tpb.pt` (`{'model': state_dict}`)."""
    (folder / "scb").mkdir(parents=True, exist_ok=True)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in plugin.scb.config.items()
              if not k.startswith("_")}
    (folder / "scb" / "config.json").write_text(json.dumps({**OFFICIAL_SCB_CONFIG_EXTRAS, **config}, indent=2))
    torch.save(plugin.scb.state_dict(), folder / "scb" / "diffusion_pytorch_model.bin")
    prefix = "module." if module_prefix else ""
    torch.save({"model": {prefix + k: v for k, v in plugin.tpb.state_dict().items()}}, folder / "tpb.pt")
    return folder


def write_official_selector(release: Path, heads: SelectorHeads, module_prefix: bool = True) -> Path:
    path = release / "plugin_selector" / "PromptTunner.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = "module." if module_prefix else ""
    torch.save({"model": {prefix + k: v for k, v in heads.state_dict().items()}}, path)
    return path


def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fill every tensor with seeded noise, so a round trip that drops or mixes tensors is caught."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return module
