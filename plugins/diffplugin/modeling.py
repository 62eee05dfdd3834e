"""diffusers' `register_to_config` with the one type it leaves out: the decorated `__init__` keeps its signature,
so calls to the TPB, SCB and selector constructors stay checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

from diffusers.configuration_utils import register_to_config as _register_to_config

_Init = TypeVar("_Init", bound=Callable[..., None])


def register_to_config(init: _Init) -> _Init:
    """Record a model's constructor arguments as its config (what `save_pretrained` writes to config.json)."""
    return cast(_Init, _register_to_config(init))
