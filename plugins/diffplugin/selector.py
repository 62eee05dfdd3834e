"""The Plugin-Selector's learned heads (the official `PromptTunnerModel`, `tunner_for_visual=True`).

Holds only the two projections and the logit scale, with the official tensor names, so `PromptTunner.pt`
converts without renaming. Scoring a request against plugins (text encoder, null candidate, threshold) sits
above this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class SelectorHeads(ModelMixin, ConfigMixin):
    r"""Visual and text projection heads of the Plugin-Selector.

    Args:
        embed_dim (`int`, *optional*, defaults to 768): Width of TPB tokens and of the text embedding.
        logit_scale_init (`float`, *optional*, defaults to log(1/0.07)): CLIP's initial temperature.
    """

    @register_to_config
    def __init__(self, embed_dim: int = 768, logit_scale_init: float = math.log(1 / 0.07)) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(logit_scale_init))
        self.proj_v = nn.Linear(embed_dim, embed_dim)
        self.proj_t = nn.Linear(embed_dim, embed_dim)

    def embed_visual(self, prompts: torch.Tensor) -> torch.Tensor:
        """Plugin prompts [n, N, D] -> max-pool over tokens -> `proj_v` -> unit vectors [n, D]."""
        return F.normalize(self.proj_v(prompts.amax(dim=1)), dim=-1)

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """Pooled text embeddings [B, D] -> `proj_t` -> unit vectors [B, D]."""
        return F.normalize(self.proj_t(text), dim=-1)

    def forward(self, prompts: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Scores [B, n]: exp(logit_scale) * cosine(text, plugin)."""
        return self.logit_scale.exp() * self.embed_text(text) @ self.embed_visual(prompts).T
