"""Slash commands typed in the chat box: the keyboard-only way to every action (the palette lists them too)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from plugins.errors import DiffPluginError

#: name -> (arguments, what it does). The order is the order /help lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "open": ("PATH", "start over from another photo"),
    "run": ("", "run the proposed plan (or say yes)"),
    "move": ("N TO", "move step N to position TO"),
    "remove": ("N", "remove step N"),
    "add": ("TASK|PLUGIN [AT]", "add a step: a task (e.g. dehaze) or a plugin id"),
    "set": ("N KEY=VALUE", "set an option of step N"),
    "undo": ("", "back to the previous version"),
    "redo": ("", "forward again"),
    "history": ("", "list the versions of the photo"),
    "export": ("[PATH]", "save the photo and the plan that replays it"),
    "view": ("", "open the current version in the system's image viewer"),
    "plugins": ("", "browse, search and install plugins"),
    "help": ("", "this list"),
}


class SlashError(DiffPluginError, ValueError):
    pass


@dataclass(frozen=True)
class Slash:
    name: str
    args: list[str]

    def number(self, position: int) -> int:
        try:
            return int(self.args[position])
        except (IndexError, ValueError):
            raise SlashError(f"/{self.name} needs a step number: /{self.name} {COMMANDS[self.name][0]}") from None


def parse(text: str) -> Slash | None:
    """The command in `text`, or None when it is a request in words."""
    if not text.startswith("/"):
        return None
    try:
        words = shlex.split(text[1:])
    except ValueError as err:
        raise SlashError(f"could not read that command: {err}") from None
    if not words or words[0] not in COMMANDS:
        raise SlashError(f"unknown command {text.split()[0]}; /help lists them")
    return Slash(words[0], words[1:])


def help_text() -> str:
    return "\n".join(f"/{name} {args}".rstrip().ljust(26) + what for name, (args, what) in COMMANDS.items())
