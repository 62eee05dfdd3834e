"""`diffplugin select`: which plugins a request asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assistant.cli.common import JsonOption, RegistryOption, emit, reported
from assistant.cli.help import CliApp

WeightsOption = Annotated[Path | None, typer.Option(
    help="A trained selector folder (default: the one that ships with diffplugin).")]


def select(
    text: Annotated[str, typer.Argument(help="What to do with the photo, in your words.")],
    image: Annotated[Path | None, typer.Option(help="The photo: with the paper's selector weights pulled, "
                                                    "its image features are used too.")] = None,
    registry: RegistryOption = None,
    weights: WeightsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which plugins a request asks for, in the order you named them; none if no plugin does it.

        diffplugin select "remove the rain, then brighten it"
    """
    with reported(as_json):
        from assistant.paths import open_registry
        from assistant.selector import load_selector
        from assistant.selector.clauses import check_request

        check_request(text)
        selector = load_selector(open_registry(registry), weights, image=image)
        selection = selector.select(str(text))

    def human() -> None:
        if selection.rejected:
            typer.echo("No plugin does that (out of scope).")
        for plugin in selection.plugins:
            typer.echo(f"{plugin.task:<10} {plugin.id:<28} {plugin.score:.2f}  \"{selection.clauses[plugin.clause]}\"")
        for note in selection.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)

    emit(selection.to_json(), as_json, human)


def register(app: CliApp) -> None:
    app.command("select")(select)
