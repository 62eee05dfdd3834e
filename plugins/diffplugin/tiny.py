"""Tiny random SD-like base models for tests, examples and quick experiments on CPU.

`make_tiny_base` builds every part the real pipeline loads (UNet, VAE, CLIP vision + processor, UniPC
scheduler with SD-1.x's schedule) at a few hundred thousand parameters, so code paths that load real weights
can be exercised end to end through the same `from_pretrained` calls. `make_tiny_text_encoder` adds the SD-1.x
text encoder and a small but working byte-level BPE tokenizer, for the paper's Plugin-Selector.
`make_sd1_shaped_base` builds the real sizes (SD-1.4's UNet and VAE, CLIP ViT-L/14) with random weights, for
timing on a GPU without downloading anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# From their defining modules: diffusers' top level shows type checkers placeholder classes.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
)

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


#: The UNet config of CompVis/stable-diffusion-v1-4 (unet/config.json), written out so nothing is downloaded.
SD14_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}

#: SD-1.x's VAE (vae/config.json) and CLIP ViT-L/14's vision tower, likewise.
SD1_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
CLIP_VIT_L14_CONFIG: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}


def make_sd1_shaped_base(seed: int = 0) -> DiffPluginPipeline:
    """SD-1.4's UNet and VAE with CLIP ViT-L/14's vision tower, random weights (CPU, fp32): the real sizes and
    cost, nothing downloaded. ~1.1 B parameters; for timing, not for pictures."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return DiffPluginPipeline(
            vae=AutoencoderKL(**SD1_VAE_CONFIG),
            unet=UNet2DConditionModel(**SD14_UNET_CONFIG),
            scheduler=UniPCMultistepScheduler(**SD1_SCHEDULE, final_sigmas_type="sigma_min"),
            image_encoder=CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_L14_CONFIG)),
            feature_extractor=CLIPImageProcessor(size={"shortest_edge": 224},
                                                 crop_size={"height": 224, "width": 224}),
        )


def make_tiny_base(path: str | Path | None = None, seed: int = 0) -> DiffPluginPipeline:
    """Build a tiny random base pipeline (CPU, fp32); save it in diffusers layout under `path` if given."""
    with torch.random.fork_rng(devices=[]):  # seeded weights without disturbing the caller's random stream
        torch.manual_seed(seed)
        pipe = _build()
    if path is not None:
        pipe.save_pretrained(path)
    return pipe


#: Width of the tiny base's cross-attention (and so of its TPB tokens and of the tiny text encoder).
TINY_WIDTH = 32
#: Words whose BPE merges the tiny tokenizer learns, so common requests become a few tokens, not only bytes.
_TINY_WORDS = ("the", "remove", "rain", "snow", "haze", "blur", "face", "photo", "image", "enhance", "clear",
               "brightness", "highlight", "moire", "in", "this", "a", "i", "want", "to")
#: CLIP's sequence length (SD-1.x pads every prompt to it).
_CLIP_MAX_LENGTH = 77


def _build() -> DiffPluginPipeline:
    width = TINY_WIDTH
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


def make_tiny_text_encoder(path: str | Path, hidden_size: int = TINY_WIDTH, seed: int = 0) -> Path:
    """Save a tiny random `CLIPTextModel` under `path/text_encoder` and a working `CLIPTokenizer` under
    `path/tokenizer`, laid out like an SD-1.x repository. `hidden_size` defaults to the tiny base's width so that a
    `SelectorHeads(embed_dim=32)` fits."""
    path = Path(path)
    tokenizer = _write_tiny_tokenizer(path / "tokenizer")
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=_CLIP_MAX_LENGTH,
        projection_dim=hidden_size,
        # The real ids, so the pooler picks the EOS position by id, not by the legacy argmax rule.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPTextModel(config)
    model.save_pretrained(path / "text_encoder")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table: printable Latin-1 bytes stand for themselves,
    every other byte for a character from 256 upward, so no byte maps to whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _write_tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    """vocab.json + merges.txt in CLIP's layout: the 256 byte symbols, the same with `</w>` (word ends), the
    merged symbols of a few words, then <|startoftext|> and <|endoftext|> last (as in CLIP)."""
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    for word in _TINY_WORDS:
        # Merge left to right, the word's last symbol carrying `</w>` as CLIP's BPE marks word ends.
        parts = [*word[:-1], word[-1] + "</w>"]
        merged = parts[0]
        for part in parts[1:]:
            pair = (merged, part)
            merged += part
            if pair not in merges:
                merges.append(pair)
                vocab_list.append(merged)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(vocab_list))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # Loaded back from the two files, as SD-1.x repositories ship them; saving adds tokenizer_config.json
    # (model_max_length, special tokens) and tokenizer.json, so from_pretrained round-trips.
    tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=_CLIP_MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    return tokenizer
