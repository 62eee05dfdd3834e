"""Splitting a request into the parts that each ask for one thing ("remove the rain, then brighten it")."""

from __future__ import annotations

import re

from plugins.errors import BadInput

# Words that join separate requests. Splitting keeps each part's position, which is the order the user named them.
# Typed in a hurry, "and" and "then" come out as "adn", "nad", "tehn" or "&" too.
_JOINERS = re.compile(
    r"\s*([,;.!?]+|&|\b(?:and then|and also|and|adn|nad|then|tehn|thne|also|plus|after that|afterwards|"
    r"before that|but first|first|once (?:that'?s|you'?ve|you have)|as well as|followed by|next)\b)\s*",
    re.IGNORECASE,
)


#: What an empty request is told, before any model loads.
EMPTY_REQUEST = "the request is empty: say what to do with the photo"


def check_request(text: str) -> None:
    """Refuses an empty request (`BadInput`): checked by the commands before the selector loads, and by it."""
    if not text.strip():
        raise BadInput(EMPTY_REQUEST)


def split_clauses(text: str) -> list[str]:
    """The non-empty parts of `text` between joining words, in order; the whole text if nothing splits it."""
    return [clause for _, clause in joined_clauses(text)]


def joined_clauses(text: str) -> list[tuple[str, str]]:
    """(joiner, clause) pairs: each clause with the joining words before it, lower-cased ("" for the first),
    so that "…, but first …" and "…, then …" stay readable by the planner."""
    pieces = _JOINERS.split(text)
    pairs: list[tuple[str, str]] = []
    joiner: list[str] = []
    for i, piece in enumerate(pieces):
        piece = piece.strip()
        if i % 2:  # a separator
            if piece and not re.fullmatch(r"[,;.!?]+", piece):
                joiner.append(piece.lower())
        elif piece and re.search(r"[a-z]{3}", piece, re.IGNORECASE):
            pairs.append((" ".join(joiner), piece))
            joiner = []
    if pairs and joiner:  # a trailing order word belongs to the last clause ("…, the smog should come first")
        pairs[-1] = (pairs[-1][0], f"{pairs[-1][1]} {' '.join(joiner)}")
    return pairs or [("", text.strip())]
