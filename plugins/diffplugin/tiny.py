"""Tiny random SD-like base models for tests, examples and quick experiments on CPU.

`make_tiny_base` builds every part the real pipeline loads (UNet, VAE, CLIP vision + processor, UniPC
scheduler with SD-1.x's schedule) at a few hundred thousand parameters, so code paths that load real weights
can be exercised end to end through the same `from_pretrained` calls. `make_tiny_text_encoder` adds the SD-1.x
text encoder and a small but working byte-level BPE tokenizer, for the paper's Plugin-Selector.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UniPCMultistepScheduler
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
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=_CLIP_MAX_LENGTH)
    tokenizer.save_pretrained(folder)
    return tokenizer
