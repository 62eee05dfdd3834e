"""`diffplugin plugins …`: list, inspect, search, install and manage plugins. A thin layer over `registry`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from assistant.cli.common import (
    CliError,
    GroupRegistryOption,
    JsonOption,
    SubRegistryOption,
    emit,
    print_schema,
    printable,
    reported,
)
from assistant.cli.help import CliApp
from registry.community.ids import looks_like_id
from registry.errors import PluginNotFound
from registry.kinds import kind_for

if TYPE_CHECKING:
    from rich.table import Table

    from registry.store import PluginStatus, Registry

HELP = """Find, install and manage plugins.

    For example:

        diffplugin plugins search "remove the rain"
        diffplugin plugins install ./my-plugin
        diffplugin plugins validate ./my-plugin

    install takes a folder with diffplugin.yaml, a .zip or .tar.gz of one, or an id an added index offers;
    validate runs every install check and installs nothing.
    """


def plugins_main(
    ctx: typer.Context,
    registry: GroupRegistryOption = None,
) -> None:
    ctx.obj = registry


def open_registry(ctx: typer.Context, registry: Path | None = None) -> Registry:
    """The registry named on the subcommand, else on `plugins`, else the default one."""
    from assistant.paths import open_registry

    return open_registry(registry or ctx.obj)


def _split(ref: str) -> tuple[str, str | None]:
    """'ns/name@1.2.0' -> ('ns/name', '1.2.0')."""
    plugin_id, _, version = ref.partition("@")
    return plugin_id, version or None


def _state_word(status: PluginStatus) -> str:
    from assistant.plugin_status import state_word

    return state_word(status)


def list_plugins(ctx: typer.Context, registry: SubRegistryOption = None, as_json: JsonOption = False) -> None:
    """Every plugin: built-in, pip-installed and installed ones, with the active version and its state."""
    with reported(as_json):
        from assistant.plugin_status import base_model_pulled, state_word

        reg = open_registry(ctx, registry)
        statuses = reg.plugins()
        errors = reg.discovery_errors()
        base_pulled = base_model_pulled()
    rows = [{"id": s.id, "version": s.active.version, "kind": s.manifest.kind, "tasks": ", ".join(s.manifest.tasks),
             "source": s.active.source, "state": state_word(s, base_pulled),
             "licence": s.manifest.license + (" (non-commercial)" if s.manifest.non_commercial else "")}
            for s in statuses]

    def human() -> None:
        from rich.console import Console

        console = Console()
        table, left_out = _fitting_table(rows, console.width)
        console.print(table)
        if left_out:
            typer.secho(f"({', '.join(left_out)} left out at this width: `plugins show ID` or --json has them)",
                        fg=typer.colors.YELLOW, err=True)
        for error in errors:
            typer.secho(f"broken plugin package: {printable(error)} (run `diffplugin plugins validate` on it)",
                        fg=typer.colors.YELLOW, err=True)

    emit({"plugins": [{**s.to_json(), "state": row["state"]} for s, row in zip(statuses, rows, strict=True)],
          "errors": errors}, as_json, human)


#: `plugins list`'s columns, in the order they are left out when the terminal is too narrow for all.
_LEAST_NEEDED_FIRST = ("source", "licence", "version", "tasks")


def _fitting_table(rows: list[dict[str, str]], width: int) -> tuple[Table, list[str]]:
    """The plugins table, without the columns that do not fit in `width` (cells wrap, never cut); and which those
    are."""
    from rich.console import Console

    columns = ["id", "version", "kind", "tasks", "source", "state", "licence"]
    left_out: list[str] = []
    unbounded = Console(width=10_000)  # a measure is clamped to the console's width
    table = _table(rows, columns)
    for name in _LEAST_NEEDED_FIRST:
        if unbounded.measure(table).minimum <= width:
            break
        columns.remove(name)
        left_out.append(name)
        table = _table(rows, columns)
    return table, left_out


def _table(rows: list[dict[str, str]], columns: list[str]) -> Table:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(*columns, box=box.SIMPLE_HEAD)
    for column in table.columns:
        column.no_wrap = column.header in ("id", "version")
        column.overflow = "fold"
    for row in rows:
        # Text cells: Rich reads markup in plain strings, and a manifest's "[/bold]" would stop the listing.
        table.add_row(*(Text(printable(row[name])) for name in columns))
    return table


def show(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id, optionally @version.")],
         registry: SubRegistryOption = None,
         as_json: JsonOption = False) -> None:
    """A plugin's manifest and state (trust decision, versions, problems)."""
    with reported(as_json):
        try:
            status = open_registry(ctx, registry).get(*_split(plugin))
        except PluginNotFound:
            offered = _indexed(plugin)
            if offered is None:
                raise
            emit(offered, as_json, lambda: _show_indexed(offered))
            return
    data = {**status.to_json(), "manifest": status.manifest.model_dump(mode="json", exclude_none=True)}

    def human() -> None:
        from registry.manifest import dump_manifest

        trust = status.trust
        typer.echo(printable(f"{status.id} {status.active.version} ({status.active.source}, {_state_word(status)})"))
        typer.echo(printable(f"versions: {', '.join(status.versions)}; folder: {status.active.folder}"))
        if kind_for(status.manifest).runs_code:
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


def _indexed(plugin: str) -> dict | None:
    """An indexed plugin's details (licence, publisher, hashes, examples), when no installed plugin has the id."""
    from assistant.cli.index import open_indexes
    from registry.community.resolve import describe
    from registry.errors import RegistryError

    indexes = open_indexes()
    if not indexes.sources.all():
        return None
    try:
        usable, _ = indexes.resolve(plugin)
    except RegistryError:
        return None
    return {**describe(usable), "installed": False}


def _show_indexed(offered: dict) -> None:
    typer.echo(printable(f"{offered['id']} {offered['version']} (index '{offered['index']}', not installed: "
                         f"`diffplugin plugins install {offered['id']}`)"))
    publisher = f"{offered['publisher']} ({offered['key_fingerprint']})" if offered["signed"] else "unsigned"
    licence = offered["license"] + (" (non-commercial)" if offered["non_commercial"] else "")
    for line in (f"name: {offered['name']}", f"kind: {offered['kind']}; tasks: {', '.join(offered['tasks'])}",
                 f"licence: {licence}", f"publisher: {publisher}", f"published: {offered['published']}",
                 f"archive: sha256 {offered['archive']['sha256']}, {offered['archive']['size']:,} bytes",
                 *(f"weight {w['path']}: sha256 {w['sha256']}" for w in offered["weights"]),
                 f"description: {offered['description']}", "examples:",
                 *(f"  - {example}" for example in offered["examples"])):
        typer.echo(printable(line))


def search(ctx: typer.Context, text: Annotated[str, typer.Argument(help="What you want done, in your words.")],
           limit: Annotated[int, typer.Option(help="How many plugins to show.", min=1)] = 5,
           registry: SubRegistryOption = None,
           as_json: JsonOption = False) -> None:
    """Plugins ranked by how well their description, tasks and examples match TEXT.

    The score is a cosine (-1..1). Installed plugins and those the added indexes offer are ranked together; the
    offered ones are marked `index:NAME` (install them by id)."""
    with reported(as_json):
        from assistant.cli.index import open_indexes

        found, problems = open_indexes().search(open_registry(ctx, registry), text, limit)

    def human() -> None:
        if not found:
            typer.echo("no plugins are enabled")
        for f in found:
            hit = f.hit
            typer.echo(printable(f"{hit.score:6.3f}  {hit.id} {hit.version}  [{f.mark}]  {hit.name}  "
                                 f"[{', '.join(hit.tasks)}]  matched: {hit.matched!r}"))
        for problem in problems:
            typer.secho(f"warning: {printable(problem)}", fg=typer.colors.YELLOW, err=True)

    emit({"query": text, "results": [f.to_json() for f in found], "problems": problems}, as_json, human)


def install(ctx: typer.Context,
            source: Annotated[str, typer.Argument(help="Plugin folder (with diffplugin.yaml) or .zip / .tar.gz; "
                                                       "or an id, ns/name[@version], from the added indexes.")],
            trust: Annotated[bool, typer.Option("--trust", help="Allow a python plugin's code to run: only for "
                                                                 "authors you trust. Recorded and shown.")] = False,
            index: Annotated[str | None, typer.Option(help="Install by id from this index only.")] = None,
            registry: SubRegistryOption = None,
            as_json: JsonOption = False) -> None:
    """Install a plugin: every check passes or nothing changes.

    By id: the newest version that is not yanked, downloaded, its signature, size and SHA-256 checked before it
    is unpacked."""
    from assistant.cli.index import download_progress, open_indexes

    entry = None
    with reported(as_json), download_progress(as_json) as progress:
        path = Path(source).expanduser()
        if path.exists() or not looks_like_id(source):
            if index is not None:
                raise CliError(f"--index is for installs by id; {source} is a file or folder")
            result = open_registry(ctx, registry).install(path, trust=trust)
            warnings = result.warnings
        else:
            indexes = open_indexes()
            if not indexes.sources.all():
                raise CliError(f"{source}: no such file or folder, and no index is added to install it by id from "
                               "(`diffplugin index add NAME URL|FOLDER`)")
            installed = indexes.install(open_registry(ctx, registry), source, trust=trust, index=index,
                                        progress=progress)
            result, entry = installed.result, installed.usable
            warnings = installed.warnings + result.warnings
    record = result.record
    data = {"id": record.id, "version": record.version, "folder": str(record.folder), "warnings": warnings,
            "takes_over": result.takes_over}
    if entry is not None:
        data["from_index"] = {"index": entry.source.name, "sha256": entry.entry.archive.sha256,
                              "signed": entry.signed, "publisher": entry.entry.publisher.name
                              if entry.entry.publisher else None}

    def human() -> None:
        origin = f" from index '{entry.source.name}'" if entry is not None else ""
        typer.echo(printable(f"installed {record.id} {record.version}{origin} -> {record.folder}"))
        for warning in warnings:
            typer.secho(f"warning: {printable(warning)}", fg=typer.colors.YELLOW)
        for note in result.notes:
            typer.secho(printable(note), fg=typer.colors.YELLOW)

    emit(data, as_json, human)


def publish(ctx: typer.Context,
            folder: Annotated[Path, typer.Argument(help="The plugin folder (with diffplugin.yaml).")],
            index: Annotated[Path, typer.Option("--index", help="The index folder to publish into (made if "
                                                                "new): index.json and archives/.")],
            key: Annotated[Path | None, typer.Option(help="Your private key (default: the data folder's "
                                                          "keys/publisher.key; `diffplugin index keygen`).")] = None,
            unsigned: Annotated[bool, typer.Option("--unsigned", help="Publish without signing (only local "
                                                                      "indexes, or ones added with "
                                                                      "--allow-unsigned, accept it).")] = False,
            publisher: Annotated[str | None, typer.Option(help="Publisher name shown to users (default: the first "
                                                               "author).")] = None,
            title: Annotated[str | None, typer.Option("--title", help="The index's name for people (new "
                                                                       "indexes).")] = None,
            registry: SubRegistryOption = None,
            as_json: JsonOption = False) -> None:
    """Add a plugin to an index folder: validated as an install would, archived, its entry signed.

    Older versions are kept. Serve the folder with any static web server, or share it as it is."""
    with reported(as_json):
        from assistant.cli.index import default_key
        from registry.community.publish import IndexFolder
        from registry.community.signing import load_private_key

        private = None if unsigned else load_private_key(key or default_key())
        published = IndexFolder(index).publish(folder, open_registry(ctx, registry), private, publisher, name=title)

    def human() -> None:
        e = published.entry
        how = f"signed ({published.to_json()['key_fingerprint']})" if e.signature else "unsigned"
        typer.echo(printable(f"published {e.id} {e.version}, {how}: {published.archive} "
                             f"({e.archive.size:,} bytes, sha256 {e.archive.sha256})"))
        for warning in published.warnings:
            typer.secho(f"warning: {printable(warning)}", fg=typer.colors.YELLOW)

    emit(published.to_json(), as_json, human)


def yank(plugin: Annotated[str, typer.Argument(help="ns/name@version to withdraw.")],
         index: Annotated[Path, typer.Option("--index", help="The index folder it is published in.")],
         key: Annotated[Path | None, typer.Option(help="The private key that signed it (default: the data "
                                                       "folder's keys/publisher.key).")] = None,
         reason: Annotated[str | None, typer.Option(help="Why, for users (e.g. 'corrupts large photos').")] = None,
         undo: Annotated[bool, typer.Option("--undo", help="Make it installable again.")] = False,
         as_json: JsonOption = False) -> None:
    """Withdraw a published version: installs without a version skip it, `ns/name@version` still installs it."""
    with reported(as_json):
        from assistant.cli.index import default_key
        from registry.community.publish import IndexFolder
        from registry.community.resolve import split_ref
        from registry.community.signing import load_private_key

        plugin_id, version = split_ref(plugin)
        if version is None:
            raise CliError(f"{plugin}: name the version to yank, e.g. {plugin}@1.0.0")
        folder = IndexFolder(index)
        _, entries = folder.entries()
        signed = any(e.entry is not None and e.entry.id == plugin_id and e.entry.publisher for e in entries)
        private = load_private_key(key or default_key()) if signed else None
        entry = folder.yank(plugin_id, version, private, reason, undo=undo)
    emit({"id": entry.id, "version": entry.version, "yanked": entry.yanked, "reason": entry.yanked_reason},
         as_json, lambda: typer.echo(f"{entry.label}: {'yanked' if entry.yanked else 'no longer yanked'}"))


def remove(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id; @version removes only "
                                                                          "that version.")],
           registry: SubRegistryOption = None,
           as_json: JsonOption = False) -> None:
    """Uninstall an installed plugin (all its versions, or one)."""
    with reported(as_json):
        plugin_id, version = _split(plugin)
        removed = open_registry(ctx, registry).remove(plugin_id, version)
    emit({"id": plugin_id, "removed": removed}, as_json,
         lambda: typer.echo(f"removed {plugin_id} {', '.join(removed)}"))


def enable(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id; @version also makes that "
                                                                          "version the active one.")],
           trust: Annotated[bool, typer.Option("--trust", help="Record that you trust this python plugin's code.")]
           = False, registry: SubRegistryOption = None, as_json: JsonOption = False) -> None:
    """Enable a plugin (and choose its active version, or grant trust)."""
    with reported(as_json):
        status = open_registry(ctx, registry).enable(*_split(plugin), trust=trust)
    emit(status.to_json(), as_json,
         lambda: typer.echo(f"{status.id} {status.active.version}: {_state_word(status)}"))


def disable(ctx: typer.Context, plugin: Annotated[str, typer.Argument(help="Plugin id.")],
            registry: SubRegistryOption = None,
            as_json: JsonOption = False) -> None:
    """Disable a plugin: kept installed, but not searched, selected or run."""
    with reported(as_json):
        status = open_registry(ctx, registry).disable(plugin)
    emit(status.to_json(), as_json, lambda: typer.echo(f"{status.id}: disabled"))


def validate(ctx: typer.Context, path: Annotated[Path, typer.Argument(help="Plugin folder or its diffplugin.yaml.")],
             registry: SubRegistryOption = None,
             as_json: JsonOption = False) -> None:
    """Run every install check on a plugin folder without installing it. Exits 1 on the first problem."""
    with reported(as_json):
        manifest, warnings = open_registry(ctx, registry).validate(path)
    data = {"valid": True, "id": manifest.id, "version": manifest.version, "warnings": warnings}

    def human() -> None:
        typer.echo(printable(f"{manifest.id} {manifest.version}: valid"))
        for warning in warnings:
            typer.secho(f"warning: {printable(warning)}", fg=typer.colors.YELLOW)

    emit(data, as_json, human)


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


def schema(output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file.")] = None,
           as_json: JsonOption = False) -> None:
    """The JSON Schema of diffplugin.yaml, for editors and plugin authors (always JSON)."""
    from registry.manifest import manifest_schema

    print_schema(manifest_schema(), output, as_json)


def reindex(ctx: typer.Context, registry: SubRegistryOption = None, as_json: JsonOption = False) -> None:
    """Rebuild the search index from the manifests (it is also rebuilt by itself when missing or stale)."""
    from rich.progress import Progress

    with reported(as_json), Progress(disable=as_json, transient=True) as bar:
        job = bar.add_task("embedding", total=None)
        count = open_registry(ctx, registry).reindex(
            progress=lambda event: bar.update(job, completed=event.done, total=event.total))
    emit({"indexed": count}, as_json, lambda: typer.echo(f"indexed {count} plugins"))


def register(app: CliApp) -> None:
    app.add_group("plugins", HELP, {
        "list": list_plugins, "show": show, "search": search, "install": install, "publish": publish, "yank": yank,
        "remove": remove, "enable": enable, "disable": disable, "validate": validate, "init": init, "schema": schema,
        "reindex": reindex,
    }, callback=plugins_main)
