"""The errors of `models convert` and `models pull`, which the CLI shows as one clear line. No heavy imports here."""

from __future__ import annotations

from plugins.errors import DiffPluginError


class ConversionError(DiffPluginError, ValueError):
    """An official file is missing, unsafe, or does not hold what the official release holds."""


class PullError(DiffPluginError, RuntimeError):
    """A download or conversion step of `pull` failed; the message says what to do instead."""

