"""Errors that mean "the input was wrong", which the CLI shows as one clear line. No heavy imports here."""

from __future__ import annotations


class ConversionError(ValueError):
    """An official file is missing, unsafe, or does not hold what the official release holds."""


class PullError(RuntimeError):
    """A download or conversion step of `pull` failed; the message says what to do instead."""


USER_ERRORS: tuple[type[Exception], ...] = (ConversionError, PullError, FileExistsError, FileNotFoundError, ValueError)
