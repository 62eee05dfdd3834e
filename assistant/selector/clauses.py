"""Splitting a request into the parts that each ask for one thing ("remove the rain, then brighten it")."""

from __future__ import annotations

import re

# Words that join separate requests. Splitting keeps each part's position, which is the order the user named them.
_JOINERS = re.compile(
    r"\s*(?:[,;.!?]+|\b(?:and then|and also|and|then|also|plus|after that|afterwards|before that|but first|"
    r"first|once (?:that'?s|you'?ve|you have)|as well as|followed by|next)\b)\s*",
    re.IGNORECASE,
)


def split_clauses(text: str) -> list[str]:
    """The non-empty parts of `text` between joining words, in order; the whole text if nothing splits it."""
    parts = [p.strip() for p in _JOINERS.split(text) if p and p.strip()]
    parts = [p for p in parts if re.search(r"[a-z]{3}", p, re.IGNORECASE)]
    return parts or [text.strip()]
