"""Spatial Complement Branch (SCB): the degraded photo's latent -> residuals for the UNet's full-resolution skips.

A cut-down ControlNet: a 3x3 stem, one cross-attention down block without a downsampler, and zero-initialised
1x1 convs. Attribute names follow the official release so its state dicts load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_blocks import get_down_block
from diffusers.utils.outputs import BaseOutput
from torch import nn

from plugins.diffplugin.modeling import register_to_config

SUPPORTED_DOWN_BLOCK = "CrossAttnDownBlock2D"


@dataclass
class SCBOutput(BaseOutput):
    """Residuals for the UNet's first skips, in skip order (stem, then one per layer)."""

    down_block_res_samples: tuple[torch.Tensor, ...]


class SCBNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers: bases disagree on config_name
    r"""The Spatial Complement Branch of a Diff-Plugin Task-Plugin.

    Its output depends only on the degraded latent, the timestep and the task prompt, never on the noisy latent
    being denoised, so `forward` does not take one.

    Args:
        in_channels (`int`, *optional*, defaults to 4): Channels of the VAE latent.
        block_out_channels (`tuple[int]`, *optional*, defaults to `(320,)`):
            Width of the branch. Must equal the UNet's first `block_out_channels`. One entry only.
        down_block_types (`tuple[str]`, *optional*, defaults to `("CrossAttnDownBlock2D",)`): One entry only.
        layers_per_block (`int`, *optional*, defaults to 2):
            ResNet+Transformer layers. The branch yields `layers_per_block + 1` residuals, which must match the
            UNet's full-resolution skips (its `layers_per_block + 1`).
        cross_attention_dim (`int`, *optional*, defaults to 768): Width of the task prompt.
        attention_head_dim (`int`, *optional*, defaults to 8):
            Number of attention heads, named as in diffusers <= 0.17 and the official configs.
        norm_num_groups, norm_eps, act_fn, flip_sin_to_cos, freq_shift, use_linear_projection,
        only_cross_attention, upcast_attention: as in [`UNet2DConditionModel`].
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        block_out_channels: tuple[int, ...] = (320,),
        down_block_types: tuple[str, ...] = (SUPPORTED_DOWN_BLOCK,),
        layers_per_block: int = 2,
        cross_attention_dim: int = 768,
        attention_head_dim: int = 8,
        norm_num_groups: int = 32,
        norm_eps: float = 1e-5,
        act_fn: str = "silu",
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        use_linear_projection: bool = False,
        only_cross_attention: bool = False,
        upcast_attention: bool = False,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # diffusers' ModelMixin.__init__ is unannotated
        if len(block_out_channels) != 1 or tuple(down_block_types) != (SUPPORTED_DOWN_BLOCK,):
            raise ValueError(
                "SCBNet supports exactly one block: block_out_channels=(C,) and "
                f"down_block_types=('{SUPPORTED_DOWN_BLOCK}',); got {block_out_channels} and {down_block_types}."
            )
        channels = block_out_channels[0]
        if channels % attention_head_dim:
            raise ValueError(f"block_out_channels[0]={channels} is not divisible by {attention_head_dim} heads.")
        time_embed_dim = channels * 4

        self.time_proj = Timesteps(channels, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(channels, time_embed_dim, act_fn=act_fn)
        self.controlnet_cond_embedding = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            [
                get_down_block(
                    SUPPORTED_DOWN_BLOCK,
                    num_layers=layers_per_block,
                    in_channels=channels,
                    out_channels=channels,
                    temb_channels=time_embed_dim,
                    add_downsample=False,
                    resnet_eps=norm_eps,
                    resnet_act_fn=act_fn,
                    resnet_groups=norm_num_groups,
                    cross_attention_dim=cross_attention_dim,
                    num_attention_heads=attention_head_dim,
                    attention_head_dim=channels // attention_head_dim,
                    use_linear_projection=use_linear_projection,
                    only_cross_attention=only_cross_attention,
                    upcast_attention=upcast_attention,
                )
            ]
        )
        # Zero-initialised so that an untrained plugin leaves the UNet's output unchanged.
        convs = [nn.Conv2d(channels, channels, kernel_size=1) for _ in range(layers_per_block + 1)]
        for conv in convs:
            assert conv.bias is not None  # Conv2d has one unless asked not to
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        self.controlnet_down_blocks = nn.ModuleList(convs)

    def forward(
        self,
        cond_latent: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        conditioning_scale: float = 1.0,
        return_dict: bool = True,
    ) -> SCBOutput | tuple[tuple[torch.Tensor, ...]]:
        """Residuals for the UNet's first `layers_per_block + 1` skips.

        One condition (batch 1) with T timesteps gives the residuals of all T in one call, batch T: a sampler
        can compute a whole schedule's residuals at once, as they never depend on the noisy latent.

        Args:
            cond_latent (`torch.Tensor` [B, 4, h, w]): Scaled VAE posterior mean of the degraded photo.
            timestep (`torch.Tensor` or number): The diffusion timestep: one, one per sample, or (with B = 1)
                any number T of them.
            encoder_hidden_states (`torch.Tensor` [B, N, cross_attention_dim]): The TPB task prompt.
            conditioning_scale (`float`, defaults to 1.0): Multiplier on every residual.
        """
        batch = cond_latent.shape[0]
        timesteps = torch.as_tensor(timestep, device=cond_latent.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        steps = timesteps.shape[0]
        if batch != 1 and steps not in (1, batch):
            raise ValueError(f"{steps} timesteps for a batch of {batch} conditions: pass 1, {batch}, or a batch of 1.")
        size = max(batch, steps)
        # The sinusoidal projection is computed in fp32; cast for fp16 weights.
        emb = self.time_embedding(self.time_proj(timesteps.expand(size)).to(dtype=cond_latent.dtype))

        # The stem and its residual do not depend on the timestep: computed once per condition, then broadcast.
        hidden = self.controlnet_cond_embedding(cond_latent)
        first = self.controlnet_down_blocks[0](hidden) * conditioning_scale
        hidden = hidden.expand(size, *hidden.shape[1:])
        encoder_hidden_states = encoder_hidden_states.expand(size, *encoder_hidden_states.shape[1:])
        skips: tuple[torch.Tensor, ...] = ()
        for block in self.down_blocks:
            hidden, block_skips = block(hidden_states=hidden, temb=emb, encoder_hidden_states=encoder_hidden_states)
            skips += tuple(block_skips)

        residuals = (
            first.expand(size, *first.shape[1:]),
            *(conv(s) * conditioning_scale for conv, s in zip(self.controlnet_down_blocks[1:], skips, strict=True)),
        )
        if not return_dict:
            return (residuals,)
        return SCBOutput(down_block_res_samples=residuals)
