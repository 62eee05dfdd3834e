"""How every `diffplugin` help page reads: one convention for usage lines, option types and prose.

- Usage names arguments in capitals, optional ones in brackets: `diffplugin chat [OPTIONS] [PHOTO]`.
- A flag shows no type (`--json`, not `--json <bool>`); a repeatable option shows its element's (`<path>`, not
  `<list[Path]>`).
- Help texts are shown as written: square brackets are text, not Rich markup, and the lines of a docstring's
  paragraph flow as one, wrapped at the terminal's width. Indented lines (examples) stay on their own.

Typer builds the commands; `CliApp` makes every command and group of an app use these classes.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import typer
from rich.markup import escape
from typer import _click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

_LIST_TYPE = re.compile(r"<list\[(?P<element>.+)\]>")


def flowing(text: str) -> str:
    """`text` (a docstring) with the lines of each paragraph joined into one. Indented lines (examples) stay lines
    of their own, flush left: Typer dedents the text after the first paragraph by the margin of its lines but the
    first, which leaves examples indented on one page and not on the next."""
    lines: list[str] = []
    joinable = False  # whether the last line is prose, which the next prose line continues
    for line in inspect.cleandoc(text).split("\n"):
        prose = bool(line) and not line[0].isspace()
        if prose and joinable:
            lines[-1] += " " + line
        else:
            lines.append(line.strip())
        joinable = prose
    return "\n".join(lines)


def _as_text(help_text: str | None) -> str | None:
    """Help as it should print: flowing, and with what looks like Rich markup (`[plugin ids or tasks]`,
    `ns/name[@version]`) escaped, so that it shows instead of vanishing."""
    return None if help_text is None else escape(flowing(help_text))


def _tidy_params(command: _click.Command) -> None:
    """Parameter help as text; arguments named in capitals everywhere (usage, their panel, errors), `...` marking
    a repeatable one."""
    for param in command.params:
        if isinstance(param, (TyperArgument, TyperOption)):
            param.help = _as_text(param.help)
        if isinstance(param, TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper() + ("..." if param.nargs != 1 else "")
        if type(param) is TyperArgument and param.nargs != 1:
            param.__class__ = _RepeatedArgument  # Typer makes the parameters; only their display changes


class _RepeatedArgument(TyperArgument):
    """An argument that takes several values: its type column names one value's type (`<path>`, not
    `<list[Path]>`); its name already ends in `...`."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        shown = super().display_type_rich(ctx)
        found = _LIST_TYPE.fullmatch(shown or "")
        return f"<{found['element'].lower()}>" if found else shown


def _usage_pieces(command: _click.Command, ctx: _click.Context) -> list[str]:
    pieces = [command.options_metavar] if command.options_metavar else []
    for param in command.get_params(ctx):
        if isinstance(param, TyperArgument):
            name = param.metavar or (param.name or "").upper()
            pieces.append(name if param.required else f"[{name}]")
    return pieces


def _option_types(command: _click.Command, ctx: _click.Context) -> None:
    """The type column: nothing for a flag, the element type for a repeatable option."""
    for param in command.get_params(ctx):
        if not isinstance(param, TyperOption) or param.metavar is not None:
            continue
        if param.is_flag:
            param.metavar = ""
        elif param.multiple and (found := _LIST_TYPE.fullmatch(param.display_type(ctx))):
            param.metavar = f"<{found['element'].lower()}>"


class _HelpConvention:
    """What `HelpCommand` and `HelpGroup` share: the help text, parameters and usage line of the convention."""

    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _as_text(self.help)
        _tidy_params(self)  # type: ignore[arg-type]  # mixed into a click command, which is what it takes

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        return _usage_pieces(self, ctx)  # type: ignore[arg-type]  # as above

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        _option_types(self, ctx)  # type: ignore[arg-type]  # as above
        super().format_help(ctx, formatter)  # type: ignore[misc]  # the click command's own


class HelpCommand(_HelpConvention, TyperCommand):
    """A `diffplugin` command whose help follows the module's convention."""


class HelpGroup(_HelpConvention, TyperGroup):
    """A `diffplugin` command group whose help follows the module's convention."""

    def collect_usage_pieces(self, ctx: _click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]


class CliApp(typer.Typer):
    """A `diffplugin` command group (`typer.Typer`) whose commands and sub-groups are built as `HelpCommand` and
    `HelpGroup`, so every help page reads the same."""

    def __init__(self, *, cls: type[TyperGroup] = HelpGroup, **kwargs: Any) -> None:
        super().__init__(cls=cls, **kwargs)

    def command(self, name: str | None = None, *, cls: type[TyperCommand] | None = None,
                **kwargs: Any) -> Callable[[CommandFunctionType], CommandFunctionType]:
        return super().command(name, cls=cls or HelpCommand, **kwargs)

    def add_group(self, name: str, help: str, commands: dict[str, Callable[..., None]],
                  callback: Callable[..., None] | None = None) -> None:
        """A command group of this app: its `commands`, listed in this order, and the `callback` that takes the
        group's own options."""
        group = CliApp(help=help, no_args_is_help=True)
        if callback is not None:
            group.callback()(callback)
        for command_name, command in commands.items():
            group.command(command_name)(command)
        self.add_typer(group, name=name)
