"""Telling a plugin id from a path, where a command takes either (light: no heavy imports)."""

from __future__ import annotations

import re

_REF = re.compile(r"[a-z0-9][a-z0-9_-]*/[a-z0-9][a-z0-9_-]*(@[A-Za-z0-9.!+_-]+)?")


def looks_like_id(text: str) -> bool:
    """Whether `text` reads as `namespace/name[@version]` (a path that exists is still a path: callers check)."""
    return bool(_REF.fullmatch(text))
