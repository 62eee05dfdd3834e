"""Tiny random SD-like base models for tests, examples and quick experiments on CPU.

`make_tiny_base` builds every part the real pipeline loads (UNet, VAE, CLIP vision + processor, UniPC
scheduler with SD-1.x's schedule) at a few hundred thousand parameters, so code paths that load real weights
can be exercised end to end through the same `from_pretrained` calls.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

from plugins.diffplugin.pipeline import DiffPluginPipeline

#: SD-1.x's noise schedule (its scheduler_config.json), shared by the tiny base.
SD1_SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def make_tiny_base(path: str | Path | None = None, seed: int = 0) -> DiffPluginPipeline:
    """Build a tiny random base pipeline (CPU, fp32); save it in diffusers layout under `path` if given."""
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's random stream
        torch.manual_seed(seed)
        pipe = _build()
    if path is not None:
        pipe.save_pretrained(path)
    return pipe


def _build() -> DiffPluginPipeline:
    width = 32
    unet = UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(width, 64),
        layers_per_block=2,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=width,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=width, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=32, patch_size=4, projection_dim=width)
    )
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return DiffPluginPipeline(
        vae=vae,
        unet=unet,
        scheduler=UniPCMultistepScheduler(**SD1_SCHEDULE),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
    )
