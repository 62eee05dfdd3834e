"""What community indexes refuse, as one line each (they are `RegistryError`s, so the CLI prints them so)."""

from __future__ import annotations

from registry.errors import RegistryError


class IndexRefused(RegistryError):
    """An index, one of its entries or a downloaded archive failed a check; nothing was installed or kept."""


class IndexUnavailable(RegistryError):
    """An index or an archive could not be read (network, missing file) and no usable copy was cached."""
