"""diffplugin-assistant: restore photos by asking, with Diff-Plugin Task-Plugins on a frozen Stable Diffusion."""

__version__ = "0.1.0"
