"""Quoting a user's value in an error message: cut short, so a huge value (a plan's option, a plugin option)
never makes a huge message. No heavy imports: plans and plugins both use it."""

from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 60, 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxset = _SHORT.maxdict = 4


def shown(value: object) -> str:
    """`value` as an error message quotes it: at most 4 items, 2 levels and 60 characters."""
    return _SHORT.repr(value)
