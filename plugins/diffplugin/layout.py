"""The models folder as `diffplugin models pull` leaves it: folder names only, no imports, so that the commands that
only look for a folder (the plugin states, the executor) need not import torch."""

from __future__ import annotations

#: The diffusers base model (Stable Diffusion with its VAE, UNet and CLIP vision encoder).
BASE_FOLDER = "base"
#: The converted official Task-Plugins, one folder per task.
PLUGINS_FOLDER = "plugins"
#: SD's text encoder and tokenizer (`text_encoder/`, `tokenizer/`), which the paper's Plugin-Selector scores with.
SELECTOR_TEXT_FOLDER = "selector_text"
