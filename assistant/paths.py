"""Where diffplugin keeps its files: one data folder, overridable for tests and portable installs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from registry.store import Registry

HOME_ENV = "DIFFPLUGIN_HOME"
REGISTRY_ENV = "DIFFPLUGIN_REGISTRY"


def data_dir() -> Path:
    """`$DIFFPLUGIN_HOME`, else the platform's user data folder (e.g. ~/.local/share/diffplugin)."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser()
    from platformdirs import user_data_path

    return user_data_path("diffplugin", appauthor=False)


def cache_dir() -> Path:
    """Files derived to start faster (the selector's merged encoder weights), safe to delete: `$DIFFPLUGIN_HOME`'s
    cache/, else the platform's user cache folder (e.g. ~/.cache/diffplugin)."""
    if env := os.environ.get(HOME_ENV):
        return Path(env).expanduser() / "cache"
    from platformdirs import user_cache_path

    return user_cache_path("diffplugin", appauthor=False)


def models_dir() -> Path:
    """Base model and converted official plugins, as written by `diffplugin models pull`."""
    return data_dir() / "models"


def base_model_dir(models: Path | None = None) -> Path:
    """Where `diffplugin models pull` puts the default base model (in `models`, default `models_dir()`), and where
    edits, the plugin states and the paper's selector look for it."""
    from plugins.diffplugin.layout import BASE_FOLDER

    return (models or models_dir()) / BASE_FOLDER


def registry_dir() -> Path:
    """Installed plugins, their state and the search index: `$DIFFPLUGIN_REGISTRY`, else the data folder's."""
    if env := os.environ.get(REGISTRY_ENV):
        return Path(env).expanduser()
    return data_dir() / "registry"


def open_registry(folder: str | Path | None = None) -> Registry:
    """The `Registry` at `folder` (default: `registry_dir()`), with the pulled models for built-in weights."""
    from registry.store import Registry

    return Registry(folder or registry_dir(), models_dir=models_dir())
