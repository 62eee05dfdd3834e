"""Registry errors. Each names the file (and the manifest field) at fault, so the CLI can print one clear line."""

from __future__ import annotations

from pathlib import Path

from plugins.errors import CannotHelp as CannotHelp  # a plugin's honest "no", raised below the registry
from plugins.errors import DiffPluginError


class RegistryError(DiffPluginError):
    """Base class: something about a plugin or the registry is wrong; nothing was changed."""


class ManifestError(RegistryError):
    """A manifest is missing, not YAML, or fails validation."""

    def __init__(self, source: str | Path, field: str | None, message: str) -> None:
        self.source, self.field = str(source), field
        where = f"{source}: field '{field}'" if field else f"{source}"
        super().__init__(f"{where}: {message}")


class InstallRefused(RegistryError):
    """An install or a load was refused for safety or integrity; the message names the file and field."""

    def __init__(self, source: str | Path, message: str, field: str | None = None) -> None:
        self.source, self.field = str(source), field
        where = f"{source}: field '{field}'" if field else f"{source}"
        super().__init__(f"{where}: {message}")


class RegistryWriteError(RegistryError, OSError):
    """The file system refused a write to the registry (read-only, disk full, a folder where a file should be);
    the change was undone. An OSError too, since that is what it is."""


class PluginNotFound(RegistryError):
    """No plugin (or version) with that id is known."""
