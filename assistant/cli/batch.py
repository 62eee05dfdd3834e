"""`diffplugin batch`: one request or plan over a folder of photos; resumable, and a bad photo never stops it."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assistant.cli.common import (
    CliError,
    JsonOption,
    RegistryOption,
    diffusion_options,
    emit,
    printable,
    reported,
)
from assistant.cli.edit import LLMOption, LLMTimeoutOption, edit_context
from assistant.cli.help import CliApp
from assistant.error_report import INTERNAL_EXIT, debug_enabled
from plugins.progress import Progress as ProgressReport
from plugins.progress import ProgressEvent

if TYPE_CHECKING:
    from assistant.executor import DiffusionSettings
    from assistant.workers import Outcome, Workers
    from registry.store import Registry

#: What `batch` picks up in the input folder (by suffix, case-insensitive).
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


class Backend(StrEnum):
    """`batch --executor`: where the photos are edited."""

    LOCAL = "local"
    RAY = "ray"


@diffusion_options()
def batch_command(
    input_dir: Annotated[Path, typer.Argument(help="Folder of photos (not searched recursively).")],
    request: Annotated[str | None, typer.Argument(help="What to do with every photo (or use --plan).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the results (PHOTO.png + its plan).")]
        = Path("edited"),
    plan_file: Annotated[Path | None, typer.Option("--plan", help="Run this saved plan instead of a request.")]
        = None,
    registry: RegistryOption = None,
    llm: LLMOption = None,
    llm_timeout: LLMTimeoutOption = None,
    executor: Annotated[Backend, typer.Option(
        "--executor", help="'local': this process; 'ray': a Ray cluster (RAY_ADDRESS, or one started here), one "
                           "worker per GPU.")] = Backend.LOCAL,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Ray workers (default: one per GPU in the cluster, else 1; on CPU each takes one core).")]
        = None,
    *,
    settings: DiffusionSettings,
    as_json: JsonOption = False,
) -> None:
    """Edit every photo in a folder: resumable, and a photo that fails never stops the others.

    Photos already done (result and plan present) are skipped, so an interrupted batch resumes; a photo that fails
    is reported and the others go on. Exit status 1 if any failed (70 if one failed on a bug). For example:

        diffplugin batch holiday/ "remove the haze" -o holiday-fixed/
        RAY_ADDRESS=ray://head:10001 diffplugin batch holiday/ "remove the haze" -o fixed/ --executor ray
    """
    with reported(as_json):
        from assistant.paths import open_registry
        from assistant.photo_output import (
            OutputError,
            OutputTaken,
            check_folder,
            recorded_plan,
            save_plan,
            save_result,
            sidecar,
        )
        from assistant.planning import Plan, load_planner
        from assistant.selector.clauses import check_request
        from assistant.workers import EDIT_ERRORS, RAY_MISSING, Job, failure
        from plugins.data.photos import load_photo

        # Everything that can be answered at once is, before the planner's model or Ray loads.
        if (request is None) == (plan_file is None):
            raise CliError("give either a REQUEST or --plan PLAN (not both)")
        if request is not None:
            check_request(request)
        if workers is not None and executor == "local":
            raise CliError("--workers needs --executor ray (the local executor is one process)")
        if executor == "ray" and importlib.util.find_spec("ray") is None:
            raise CliError(RAY_MISSING)
        photos = _photos(input_dir, output)
        check_folder(output)
        shared = Plan.load(plan_file) if plan_file is not None else None
        report: dict[str, list[dict[str, Any]]] = {"done": [], "skipped": [], "failed": []}
        todo = []
        for photo in photos:
            target = output / f"{photo.stem}.png"
            if target.is_file() and sidecar(target).is_file():
                report["skipped"].append({"input": str(photo), "output": str(target)})
            elif not os.path.lexists(sidecar(target)) and (recorded := recorded_plan(target)) is not None:
                # A batch killed between placing the photo and its plan: the plan is in the photo too.
                save_plan(recorded, sidecar(target), overwrite=False)
                report["skipped"].append({"input": str(photo), "output": str(target)})
            elif os.path.lexists(target) or os.path.lexists(sidecar(target)):  # someone's file: never replaced
                taken = target if os.path.lexists(target) else sidecar(target)
                report["failed"].append({"input": str(photo), "error": f"{taken} exists and was not written by "
                                                                        "diffplugin; move it or choose another -o"})
            else:
                todo.append(photo)
        store = open_registry(registry) if todo else None  # a batch with nothing left to do opens nothing
        planner = load_planner(store, llm, llm_timeout) if request is not None and store is not None else None

        def jobs() -> Iterator[Job | Outcome]:
            for photo in todo:
                try:
                    image = load_photo(photo)
                    if shared:
                        plan = shared.model_copy(deep=True)
                    else:
                        assert planner is not None and request is not None  # a batch has a plan or a request
                        plan = planner.plan(request, image)
                except EDIT_ERRORS as err:
                    yield failure(photo.name, err)
                    continue
                yield Job(photo.name, image, plan)

        by_name = {photo.name: photo for photo in todo}
        if store is not None:  # a batch with nothing left to do starts no workers (nor Ray)
            with _workers(executor, store, settings, workers, as_json) as (pool, bar):
                for outcome in pool.map(jobs()):
                    source = by_name[outcome.name]
                    if outcome.error is not None:
                        report["failed"].append(_failed(source, outcome))
                    else:
                        assert outcome.image is not None  # an outcome without an error holds its photo
                        target = output / f"{source.stem}.png"
                        try:
                            save_result(outcome.image, target, outcome.plan, overwrite=False)
                        except OutputTaken as err:  # another command wrote there meanwhile: this photo only
                            report["failed"].append({"input": str(source), "error": str(err)})
                        except OutputError as err:  # the folder takes nothing more (full, read-only): stop here
                            raise CliError(f"{err}; the batch stopped after {len(report['done'])} edited: run it "
                                           "again to go on") from None
                        else:
                            report["done"].append({"input": str(source), "output": str(target),
                                                   "notes": outcome.notes})
                    bar(ProgressEvent("photo", len(report["done"]) + len(report["failed"]), len(todo), source.name))

    def human() -> None:
        typer.echo(f"{len(report['done'])} edited, {len(report['skipped'])} already done, "
                   f"{len(report['failed'])} failed -> {output}")
        for failed in report["failed"]:
            typer.secho(f"failed: {failed['input']}: {failed['error']}", fg=typer.colors.RED, err=True)

    emit(report, as_json, human)
    if report["failed"]:  # a photo that failed on a bug says so in the exit status too
        raise typer.Exit(INTERNAL_EXIT if any(f.get("internal") for f in report["failed"]) else 1)


def _failed(source: Path, outcome: Outcome) -> dict[str, Any]:
    """One failed photo in the report; a bug also names the log with its traceback (printed with --debug)."""
    if not outcome.internal:
        return {"input": str(source), "error": outcome.error}
    if outcome.details and debug_enabled():
        typer.echo(printable(outcome.details), err=True, nl=False)
    return {"input": str(source), "error": outcome.error, "internal": True, "log": outcome.log}


def _photos(input_dir: Path, output: Path) -> list[Path]:
    if not input_dir.is_dir():
        raise CliError(f"{input_dir}: not a folder")
    photos = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise CliError(f"{input_dir}: no photos ({', '.join(sorted(PHOTO_SUFFIXES))})")
    from assistant.photo_output import same_file

    if same_file(output, input_dir):
        raise CliError("the output folder is the input folder; choose another (photos are never overwritten)")
    stems = [p.stem for p in photos]
    if len(set(stems)) != len(stems):
        raise CliError("two photos share a name (e.g. a.jpg and a.png); their results would collide")
    return photos


@contextmanager
def _workers(kind: str, registry: Registry, settings: DiffusionSettings, workers: int | None, quiet: bool
             ) -> Iterator[tuple[Workers, ProgressReport]]:
    """The workers, and a function that shows how many photos are finished. Local: per-photo bars with their
    denoising steps, in this process; Ray: one bar for the batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    if kind == "local":
        from assistant.workers import LocalWorkers

        with edit_context(registry, quiet, settings) as context:
            yield LocalWorkers(context), lambda event: None
        return
    from assistant.ray_workers import RayWorkers

    pool = RayWorkers(registry.root.resolve(), settings, workers)  # a folder: each worker process opens it
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=quiet) as bar:
            job = bar.add_task(pool.where, total=None)
            yield pool, lambda event: bar.update(job, completed=event.done, total=event.total)
    finally:
        pool.close()


def register(app: CliApp) -> None:
    app.command("batch")(batch_command)
