"""Task-Prompt Branch (TPB): CLIP vision patch tokens -> the task prompt that conditions the UNet.

The layer layout (and so every state-dict name) matches the official release, ``visual_projection.{0,1,3,4,6}``,
so official ``tpb.pt`` files load without renaming.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from plugins.diffplugin.modeling import register_to_config


class TPBNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers: bases disagree on config_name
    r"""Maps CLIP vision patch tokens to a task prompt that replaces the text conditioning.

    Args:
        clip_v_dim (`int`, *optional*, defaults to 1024):
            Width of the CLIP vision tokens (1024 for ViT-L/14).
        cross_attention_dim (`int`, *optional*, defaults to 768):
            Width of the prompt, equal to the UNet's `cross_attention_dim` (768 for SD-1.x).
        num_cross_proj_layers (`int`, *optional*, defaults to 2):
            Hidden Linear-LayerNorm-LeakyReLU layers before the output projection.
        negative_slope (`float`, *optional*, defaults to 0.01):
            Slope of the LeakyReLU activations.
    """

    @register_to_config
    def __init__(
        self,
        clip_v_dim: int = 1024,
        cross_attention_dim: int = 768,
        num_cross_proj_layers: int = 2,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # diffusers' ModelMixin.__init__ is unannotated
        layers: list[nn.Module] = []
        for _ in range(num_cross_proj_layers):
            layers += [
                nn.Linear(clip_v_dim, clip_v_dim),
                nn.LayerNorm(clip_v_dim),
                nn.LeakyReLU(negative_slope),
            ]
        layers.append(nn.Linear(clip_v_dim, cross_attention_dim))
        self.visual_projection = nn.Sequential(*layers)

    def forward(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """`patch_tokens` [B, N, clip_v_dim] (CLIP's last hidden state without CLS) -> prompt [B, N, cross_dim]."""
        prompt: torch.Tensor = self.visual_projection(patch_tokens)
        return prompt
