"""`diffplugin plugins …`: list, inspect, search, install and manage plugins. A thin layer over `registry`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from assistant.cli_common import JsonOption, emit, printable, reported

plugins_app = typer.Typer(
    help="""Find, install and manage plugins.

    diffplugin plugins search "remove the rain"

    diffplugin plugins install ./my-plugin            (a folder with diffplugin.yaml, or a .zip / .tar.gz)

    diffplugin plugins validate ./my-plugin           (every install check, nothing installed)
    """,
    no_args_is_help=True,
)


@plugins_app.callback()
def plugins_main(
    ctx: typer.Context,
    registry: Annotated[Path | None, typer.Option(
        "--registry", envvar="DIFFPLUGIN_REGISTRY",
        help="Registry folder (default: the data folder's registry/, see $DIFFPLUGIN_HOME).")] = None,
) -> None:
    ctx.obj = registry


def open_registry(ctx: typer.Context):
    from assistant.paths import open_registry

    return open_registry(ctx.obj)


def _split(ref: str) -> tuple[str, str | None]:
    """'ns/name@1.2.0' -> ('ns/name', '1.2.0')."""
    plugin_id, _, version = ref.partition("@")
    return plugin_id, version or None


def _state_word(status) -> str:
    if not status.enabled:
        return "disabled"
    if not status.trusted:
        return "needs --trust"
    if status.problems:
        return "needs weights"
    return "ready"


@plugins_app.command("list")
def list_plugins(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every plugin: built-in, pip-installed and installed ones, with the active version and its state."""
    with reported(as_json):
        reg = open_registry(ctx)
        statuses = reg.plugins()
        errors = reg.discovery_errors()

    def human() -> None:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table("id", "version", "kind", "tasks", "source", "state", "licence")
        for column in table.columns[:2]:
            column.no_wrap = True
        for s in statuses:
            licence = s.manifest.license + (" (non-commercial)" if s.manifest.non_commercial else "")
            cells = (s.id, s.active.version, s.manifest.kind, ", ".join(s.manifest.tasks), s.active.source,
                     _state_word(s), licence)
            # Text cells: Rich reads markup in plain strings, and a manifest's "[/bold]" would stop the listing.
            table.add_row(*(Text(printable(cell)) for cell in cells))
        Console().print(table)
        for error in errors:
            typer.secho(f"broken plugin package: {printable(error)} (run `diffplugin plugins validate` on it)",
                        fg=typer.colors.YELLOW, err=True)

    emit({"plugins": [s.to_json() for s in statuses], "errors": errors}, as_json, human)


@plugins_app.command("show")
def show(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id, optionally @version.")],
         as_json: JsonOption = False) -> None:
    """A plugin's manifest and state (trust decision, versions, problems)."""
    with reported(as_json):
        status = open_registry(ctx).get(*_split(plugin))
    data = {**status.to_json(), "manifest": status.manifest.model_dump(mode="json", exclude_none=True)}

    def human() -> None:
        from registry.manifest import dump_manifest

        trust = status.trust
        typer.echo(printable(f"{status.id} {status.active.version} ({status.active.source}, {_state_word(status)})"))
        typer.echo(printable(f"versions: {', '.join(status.versions)}; folder: {status.active.folder}"))
        if status.manifest.kind == "python":
            if status.active.builtin:
                typer.echo("trust: built in")
            elif trust and trust.granted:
                typer.echo(f"trust: granted {trust.at} by `{trust.how}`")
            else:
                typer.echo("trust: not granted")
        for problem in status.problems:
            typer.secho(f"problem: {printable(problem)}", fg=typer.colors.YELLOW)
        typer.echo("---")
        typer.echo(printable(dump_manifest(status.manifest)), nl=False)

    emit(data, as_json, human)


@plugins_app.command("search")
def search(ctx: typer.Context, text: Annotated[str, typer.Argument(help="What you want done, in your words.")],
           limit: Annotated[int, typer.Option(help="How many plugins to show.", min=1)] = 5,
           as_json: JsonOption = False) -> None:
    """Plugins ranked by how well their description, tasks and examples match TEXT (score: cosine, -1..1)."""
    with reported(as_json):
        hits = open_registry(ctx).search(text, limit)

    def human() -> None:
        if not hits:
            typer.echo("no plugins are enabled")
        for hit in hits:
            typer.echo(printable(f"{hit.score:6.3f}  {hit.id} {hit.version}  {hit.name}  [{', '.join(hit.tasks)}]  "
                                 f"matched: {hit.matched!r}"))

    emit({"query": text, "results": [h.to_json() for h in hits]}, as_json, human)


@plugins_app.command("install")
def install(ctx: typer.Context,
            source: Annotated[Path, typer.Argument(help="Plugin folder (with diffplugin.yaml) or .zip / .tar.gz.")],
            trust: Annotated[bool, typer.Option("--trust", help="Allow a python plugin's code to run: only for "
                                                                 "authors you trust. Recorded and shown.")] = False,
            as_json: JsonOption = False) -> None:
    """Install a plugin. Every check passes or nothing changes."""
    with reported(as_json):
        result = open_registry(ctx).install(source, trust=trust)
    record = result.record
    data = {"id": record.id, "version": record.version, "folder": str(record.folder), "warnings": result.warnings,
            "takes_over": result.takes_over}

    def human() -> None:
        typer.echo(printable(f"installed {record.id} {record.version} -> {record.folder}"))
        for warning in result.warnings:
            typer.secho(f"warning: {printable(warning)}", fg=typer.colors.YELLOW)
        for note in result.notes:
            typer.secho(printable(note), fg=typer.colors.YELLOW)

    emit(data, as_json, human)


@plugins_app.command("remove")
def remove(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id; @version removes only "
                                                                          "that version.")],
           as_json: JsonOption = False) -> None:
    """Uninstall an installed plugin (all its versions, or one)."""
    with reported(as_json):
        plugin_id, version = _split(plugin)
        removed = open_registry(ctx).remove(plugin_id, version)
    emit({"id": plugin_id, "removed": removed}, as_json,
         lambda: typer.echo(f"removed {plugin_id} {', '.join(removed)}"))


@plugins_app.command("enable")
def enable(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id; @version also makes that "
                                                                          "version the active one.")],
           trust: Annotated[bool, typer.Option("--trust", help="Record that you trust this python plugin's code.")]
           = False, as_json: JsonOption = False) -> None:
    """Enable a plugin (and choose its active version, or grant trust)."""
    with reported(as_json):
        status = open_registry(ctx).enable(*_split(plugin), trust=trust)
    emit(status.to_json(), as_json,
         lambda: typer.echo(f"{status.id} {status.active.version}: {_state_word(status)}"))


@plugins_app.command("disable")
def disable(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id.")],
            as_json: JsonOption = False) -> None:
    """Disable a plugin: kept installed, but not searched, selected or run."""
    with reported(as_json):
        status = open_registry(ctx).disable(plugin)
    emit(status.to_json(), as_json, lambda: typer.echo(f"{status.id}: disabled"))


@plugins_app.command("validate")
def validate(ctx: typer.Context, path: Annotated[Path, typer.Argument(help="Plugin folder or its diffplugin.yaml.")],
             as_json: JsonOption = False) -> None:
    """Run every install check on a plugin folder without installing it. Exits 1 on the first problem."""
    with reported(as_json):
        manifest, warnings = open_registry(ctx).validate(path)
    data = {"valid": True, "id": manifest.id, "version": manifest.version, "warnings": warnings}

    def human() -> None:
        typer.echo(printable(f"{manifest.id} {manifest.version}: valid"))
        for warning in warnings:
            typer.secho(f"warning: {printable(warning)}", fg=typer.colors.YELLOW)

    emit(data, as_json, human)


@plugins_app.command("init")
def init(
    folder: Annotated[Path, typer.Argument(help="Plugin folder: a trained/converted Task-Plugin (with plugin.json) "
                                                "or a folder with your python module.")],
    plugin_id: Annotated[str, typer.Option("--id", help="namespace/name, e.g. acme/deflare.")],
    name: Annotated[str, typer.Option(help="Display name.")],
    description: Annotated[str, typer.Option(help="What it does (used by search).")],
    example: Annotated[list[str], typer.Option("--example", help="A request a user might type (3 or more).")],
    license_id: Annotated[str, typer.Option("--license", help="SPDX licence id, e.g. Apache-2.0.")],
    author: Annotated[list[str], typer.Option("--author", help="Author name (repeatable).")],
    version: Annotated[str, typer.Option(help="Plugin version.")] = "0.1.0",
    task: Annotated[list[str] | None, typer.Option("--task", help="Task ids (default for a Task-Plugin: its "
                                                                   "task).")] = None,
    entry_point: Annotated[str | None, typer.Option(help="module:callable, for a python plugin.")] = None,
    homepage: Annotated[str | None, typer.Option(help="Project page.")] = None,
    gpu_memory_mb: Annotated[int | None, typer.Option(help="Estimated GPU memory in MiB.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rewrite an existing diffplugin.yaml.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Write diffplugin.yaml for a plugin folder, with the SHA-256 of every .safetensors file filled in."""
    with reported(as_json):
        from registry.authoring import init_manifest

        path = init_manifest(
            folder, overwrite=overwrite, id=plugin_id, version=version, name=name, description=description,
            examples=example, license=license_id, authors=[{"name": a} for a in author], tasks=task,
            homepage=homepage, gpu_memory_mb=gpu_memory_mb,
            kind="python" if entry_point else None, python={"entry_point": entry_point} if entry_point else None,
        )
    emit({"manifest": str(path)}, as_json, lambda: typer.echo(f"wrote {path}; check it with "
                                                              f"`diffplugin plugins validate {folder}`"))


@plugins_app.command("schema")
def schema(output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file.")] = None,
           as_json: JsonOption = False) -> None:
    """The JSON Schema of diffplugin.yaml, for editors and plugin authors (always JSON)."""
    from registry.manifest import manifest_schema

    text = json.dumps(manifest_schema(), indent=2) + "\n"
    if output is not None:
        output.write_text(text)
        emit({"schema": str(output)}, as_json, lambda: typer.echo(f"schema -> {output}"))
    else:
        typer.echo(text, nl=False)


@plugins_app.command("reindex")
def reindex(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Rebuild the search index from the manifests (it is also rebuilt by itself when missing or stale)."""
    from rich.progress import Progress

    with reported(as_json), Progress(disable=as_json, transient=True) as bar:
        job = bar.add_task("embedding", total=None)
        count = open_registry(ctx).reindex(progress=lambda done, total: bar.update(job, completed=done, total=total))
    emit({"indexed": count}, as_json, lambda: typer.echo(f"indexed {count} plugins"))
