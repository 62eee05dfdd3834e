"""What every `diffplugin` command shares: one-line errors, --json output."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
RegistryOption = Annotated[Path | None, typer.Option(
    "--registry", envvar="DIFFPLUGIN_REGISTRY", help="Registry folder (default: the data folder's registry/).")]


class CliError(Exception):
    """An error to show the user as one line, exiting 1."""


@contextmanager
def reported(as_json: bool) -> Iterator[None]:
    """Turn expected failures into one clear line (or a JSON error object) and exit status 1."""
    from plugins.diffplugin.errors import USER_ERRORS
    from registry.errors import RegistryError

    try:
        yield
    except (CliError, RegistryError, *USER_ERRORS) as err:
        if as_json:
            print(json.dumps({"error": str(err), "type": type(err).__name__}))
        else:
            typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None


def emit(result: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
        print(json.dumps(data, indent=2))
    else:
        human()


