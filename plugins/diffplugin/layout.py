"""The models folder as `diffplugin models pull` leaves it, and a Task-Plugin folder's files: names only, no
imports, so that the commands that only look for a folder (the plugin states, the executor) need not import torch."""

from __future__ import annotations

#: The diffusers base model (Stable Diffusion with its VAE, UNet and CLIP vision encoder).
BASE_FOLDER = "base"
#: The converted official Task-Plugins, one folder per task.
PLUGINS_FOLDER = "plugins"
#: SD's text encoder and tokenizer (`text_encoder/`, `tokenizer/`), which the paper's Plugin-Selector scores with.
SELECTOR_TEXT_FOLDER = "selector_text"

#: What a Task-Plugin folder holds (a pulled one, an installed one, one written by training or conversion): each
#: branch's weights and the config beside them.
TASK_PLUGIN_WEIGHTS = ("tpb/diffusion_pytorch_model.safetensors", "scb/diffusion_pytorch_model.safetensors")
TASK_PLUGIN_CONFIGS = ("tpb/config.json", "scb/config.json")
