"""`diffplugin index …`: publisher keys, and the community indexes to search and install plugins from.

A thin layer over `registry.community`; `plugins publish`, `plugins search` and `plugins install ns/name` use the
indexes added here (see docs/publishing.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from assistant.cli.common import JsonOption, emit, print_schema, printable, reported
from assistant.cli.help import CliApp

if TYPE_CHECKING:
    from plugins.progress import Progress as ProgressReport
    from plugins.progress import ProgressEvent
    from registry.community.hub import CommunityIndexes

COMMUNITY_FOLDER = "community"
KEYS_FOLDER = "keys"
DEFAULT_KEY = "publisher.key"

HELP = """Community indexes: add one, then search and install its plugins by id.

    For example:

        diffplugin index add community https://plugins.example.org/index/
        diffplugin plugins search "remove the lens flare"
        diffplugin plugins install acme/deflare

    Publishers: `diffplugin index keygen`, then `diffplugin plugins publish FOLDER --index INDEX_DIR`.
    """


def open_indexes() -> CommunityIndexes:
    """The indexes of this data folder: their list and pins in the data folder, cached copies in the cache."""
    from assistant.paths import cache_dir, data_dir
    from registry.community.hub import CommunityIndexes

    return CommunityIndexes(data_dir() / COMMUNITY_FOLDER, cache_dir() / COMMUNITY_FOLDER)


def default_key() -> Path:
    from assistant.paths import data_dir

    return data_dir() / KEYS_FOLDER / DEFAULT_KEY


@contextmanager
def download_progress(as_json: bool) -> Iterator[ProgressReport]:
    """A progress bar per download on a terminal, as `models pull` shows them; none with --json, and none until a
    download starts (an install from a folder or from the archive cache shows no bar)."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    console = Console(stderr=True)  # stdout stays the command's result, also when it is piped
    bar: Progress | None = None
    job = None

    def progress(event: ProgressEvent) -> None:
        nonlocal bar, job
        done, total = event.done, event.total
        if as_json or (bar is None and ((total is not None and done >= total) or not console.is_terminal)):
            return
        if bar is None:
            bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           console=console, transient=True)
            bar.start()
        if job is None or done == 0:
            job = bar.add_task("downloading", total=total)
        bar.update(job, completed=done, total=total)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.stop()


def keygen(output: Annotated[Path | None, typer.Option("-o", "--output", help="Private key file (default: the "
                                                                              "data folder's keys/publisher.key); "
                                                                              "the public key goes beside it, "
                                                                              ".pub added.")] = None,
           as_json: JsonOption = False) -> None:
    """Make a publisher key pair (ed25519) to sign what you publish. Keep the private key; share the .pub line."""
    with reported(as_json):
        from registry.community.signing import fingerprint, generate_key, public_path

        path = (output or default_key()).expanduser()
        public = generate_key(path)
    data = {"private_key": str(path), "public_key_file": str(public_path(path)), "public_key": public,
            "key_fingerprint": fingerprint(public)}

    def human() -> None:
        typer.echo(f"private key -> {path} (keep it secret; losing it means publishing under a new namespace)")
        typer.echo(f"public key  -> {public_path(path)}: {public} ({fingerprint(public)})")

    emit(data, as_json, human)


def add(name: Annotated[str, typer.Argument(help="A short name for it, e.g. community.")],
        location: Annotated[str, typer.Argument(help="The index: an http(s) URL, a folder (a checkout, a mirror) "
                                                     "or a file:// URL.")],
        key: Annotated[str | None, typer.Option(help="Only entries signed by this key (an 'ed25519:…' line or "
                                                     "its .pub file).")] = None,
        allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="Accept unsigned entries from a "
                                                                              "remote index (local indexes "
                                                                              "always may hold them).")] = False,
        as_json: JsonOption = False) -> None:
    """Add an index (read once now; then cached). Its plugins show in `plugins search` and install by id."""
    with reported(as_json):
        view = open_indexes().add(name, location, key=key, allow_unsigned=allow_unsigned)

    def human() -> None:
        typer.echo(printable(f"added {name}: {view.to_json()['plugins']} plugins ({len(view.usable)} versions) "
                             f"from {view.source.location}"))
        _print_refused(view.refused)

    emit(view.to_json(), as_json, human)


def _print_refused(refused: list) -> None:
    for refusal in refused:
        typer.secho(f"refused: {printable(refusal.line)}", fg=typer.colors.YELLOW, err=True)


def list_indexes(as_json: JsonOption = False) -> None:
    """The indexes added, in the order installs consult them, and the publisher key pinned per namespace."""
    with reported(as_json):
        from registry.community.signing import fingerprint

        hub = open_indexes()
        sources = hub.sources.all()
        pins = hub.pins.load()
    data = {"indexes": [{**s.model_dump(mode="json"), "remote": s.remote,
                         "key_fingerprint": fingerprint(s.key) if s.key else None} for s in sources],
            "pins": {ns: {**p.model_dump(mode="json"), "key_fingerprint": fingerprint(p.key)}
                     for ns, p in pins.items()}}

    def human() -> None:
        if not sources:
            typer.echo("no indexes; add one with `diffplugin index add NAME URL|FOLDER`")
        for s in sources:
            rules = "signed entries only" if s.require_signatures else "unsigned entries allowed"
            if s.key:
                rules += f", key {fingerprint(s.key)} only"
            typer.echo(printable(f"{s.name}  {s.location}  ({rules})"))
        for ns, p in sorted(pins.items()):
            typer.echo(printable(f"pinned {ns}/ -> {fingerprint(p.key)} (first seen in '{p.index}', {p.at})"))

    emit(data, as_json, human)


def remove(name: Annotated[str, typer.Argument(help="The index's name.")], as_json: JsonOption = False) -> None:
    """Remove an index and its cached copy (installed plugins and pinned keys stay)."""
    with reported(as_json):
        source = open_indexes().remove(name)
    emit({"removed": source.name, "location": source.location}, as_json,
         lambda: typer.echo(printable(f"removed {source.name} ({source.location})")))


def update(name: Annotated[str | None, typer.Argument(help="Only this index (default: all).")] = None,
           archives: Annotated[bool, typer.Option("--archives", help="Also download the newest archive of every "
                                                                      "plugin, to install without the network.")]
           = False,
           as_json: JsonOption = False) -> None:
    """Refresh the cached copies of the indexes.

    A conditional request: an unchanged index is not downloaded again. Exits 1 when an index could not be
    refreshed; its cached copy is still used."""
    with reported(as_json), download_progress(as_json) as progress:
        hub = open_indexes()
        results = hub.update(name)
        fetched = [u.label for u in hub.prefetch(progress)] if archives else []
    failed = [error for _, _, error in results if error]
    data = {"indexes": [{"name": s.name, "error": error, **(view.to_json() if view else {})}
                        for s, view, error in results], "archives": fetched}

    def human() -> None:
        if not results:
            typer.echo("no indexes; add one with `diffplugin index add NAME URL|FOLDER`")
        for source, view, error in results:
            if error:
                typer.secho(f"error: {printable(error)} (the cached copy is still used)", fg=typer.colors.RED,
                            err=True)
                continue
            assert view is not None  # refreshed, since there was no error
            typer.echo(printable(f"{source.name}: {view.fetched.how}, {view.to_json()['plugins']} plugins"))
            _print_refused(view.refused)
        for label in fetched:
            typer.echo(printable(f"archive ready: {label}"))

    emit(data, as_json, human)
    if failed:
        raise typer.Exit(1)


def unpin(namespace: Annotated[str, typer.Argument(help="The namespace, e.g. acme.")],
          as_json: JsonOption = False) -> None:
    """Forget the key pinned for a namespace, so that the next key seen is pinned.

    Only when its publisher told you, another way, that they changed keys."""
    with reported(as_json):
        data = open_indexes().unpin(namespace.rstrip("/"))
    emit(data, as_json, lambda: typer.echo(f"unpinned {namespace.rstrip('/')}/ (was {data['key_fingerprint']})"))


def schema(output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file.")] = None,
           as_json: JsonOption = False) -> None:
    """The JSON Schema of an index document (index.json), for index hosts and tools (always JSON)."""
    from registry.community.format import index_schema

    print_schema(index_schema(), output, as_json)


def register(app: CliApp) -> None:
    app.add_group("index", HELP, {"keygen": keygen, "add": add, "list": list_indexes, "remove": remove,
                                  "update": update, "unpin": unpin, "schema": schema})
