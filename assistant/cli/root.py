"""The root `diffplugin` command: --version, --threads, --debug, the help's panels, and every command module's
`register`, called in one place."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from assistant import __version__
from assistant.cli import batch, chat, data, edit, eval, index, models, plugins, selector, train
from assistant.cli.common import QuietPipeGroup
from assistant.cli.help import CliApp
from assistant.cpu_threads import THREADS_ENV
from assistant.error_report import set_debug

#: The root help's panels, in order, and their commands in order: the everyday ones first.
SECTIONS = {
    "Edit photos": ("edit", "chat", "plan", "run", "batch", "apply"),
    "Plugins": ("plugins", "select", "index"),
    "Models, training and evaluation": ("models", "train", "data", "eval"),
}


class RootGroup(QuietPipeGroup):
    """`diffplugin`: its commands listed in `SECTIONS`' panels and order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for section, names in SECTIONS.items():
            for name in names:
                if name in self.commands:
                    self.commands[name].rich_help_panel = section  # type: ignore[attr-defined]

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        order = [name for names in SECTIONS.values() for name in names]
        return sorted(super().list_commands(ctx), key=lambda name: order.index(name) if name in order else len(order))


app = CliApp(
    help="""Edit photos by asking: restoration plugins (Diff-Plugin Task-Plugins on a frozen Stable Diffusion, and
    built-in ones that need no weights), a planner and a terminal chat.

    For example:

        diffplugin edit photo.jpg "clear the fog and make it brighter" -o fixed.png
        diffplugin chat photo.jpg

    The built-in plugins work offline. The diffusion plugins need their weights, fetched once with
    `diffplugin models pull` (online); without them, try the whole workflow on a tiny random model:
    `diffplugin models make-tiny ./tiny`.
    """,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=RootGroup,
)

# Each module attaches its commands and its groups; the order of a group's commands in its help is theirs.
for module in (edit, batch, chat, selector, plugins, index, models, train, data, eval):
    module.register(app)


def _version(value: bool) -> None:
    if value:
        print(f"diffplugin {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    threads: Annotated[int | None, typer.Option(
        min=1, envvar=THREADS_ENV, help="CPU threads for PyTorch and OpenCV (default: one per CPU not already busy, "
                                        "so a busy machine does not stall every step).")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="On an internal error (a bug), print its traceback too (also: DIFFPLUGIN_DEBUG=1). It is "
                        "always written to the data folder's logs/diffplugin.log.")] = False,
) -> None:
    set_debug(debug)
    if threads is not None:  # through the environment, so batch workers and the chat's executor get it too
        os.environ[THREADS_ENV] = str(threads)


def run() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
