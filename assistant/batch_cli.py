"""`diffplugin batch`: one request or plan over a folder of photos; resumable, and a bad photo never stops it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from assistant.cli_common import CliError, JsonOption, RegistryOption, emit, reported
from assistant.edit_cli import LLMOption

#: What `batch` picks up in the input folder (by suffix, case-insensitive).
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def batch_command(
    input_dir: Annotated[Path, typer.Argument(help="Folder of photos (not searched recursively).")],
    request: Annotated[str | None, typer.Argument(help="What to do with every photo (or use --plan).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the results (PHOTO.png + its plan).")]
        = Path("edited"),
    plan_file: Annotated[Path | None, typer.Option("--plan", help="Run this saved plan instead of a request.")]
        = None,
    registry: RegistryOption = None,
    llm: LLMOption = None,
    as_json: JsonOption = False,
) -> None:
    """Edit every photo in a folder. Photos already done (result and plan present) are skipped, so an
    interrupted batch resumes; a photo that fails is reported and the others go on. Exit status 1 if any failed.

        diffplugin batch holiday/ "remove the haze" -o holiday-fixed/
    """
    with reported(as_json):
        from assistant.edit_cli import edit_session
        from assistant.photo_output import save_result, sidecar
        from assistant.planning import Plan, load_planner, run_plan
        from plugins.data.photos import load_photo

        if (request is None) == (plan_file is None):
            raise CliError("give either a REQUEST or --plan PLAN (not both)")
        if not input_dir.is_dir():
            raise CliError(f"{input_dir}: not a folder")
        photos = sorted(p for p in input_dir.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
        if not photos:
            raise CliError(f"{input_dir}: no photos ({', '.join(sorted(PHOTO_SUFFIXES))})")
        if output.resolve() == input_dir.resolve():
            raise CliError("the output folder is the input folder; choose another (photos are never overwritten)")
        stems = [p.stem for p in photos]
        if len(set(stems)) != len(stems):
            raise CliError("two photos share a name (e.g. a.jpg and a.png); their results would collide")
        planner = load_planner(registry, llm) if request is not None else None
        shared = Plan.load(plan_file) if plan_file is not None else None
        report: dict[str, list[dict[str, str]]] = {"done": [], "skipped": [], "failed": []}
        with edit_session(registry, as_json) as (store, executor, progress):
            for photo in photos:
                target = output / f"{photo.stem}.png"
                if target.is_file() and sidecar(target).is_file():
                    report["skipped"].append({"input": str(photo), "output": str(target)})
                    continue
                try:
                    image = load_photo(photo)
                    plan = shared.model_copy(deep=True) if shared else planner.plan(request, image)
                    result = run_plan(plan, image, store, executor, progress(photo.name, len(plan.steps)))
                    save_result(result, target, plan)
                    report["done"].append({"input": str(photo), "output": str(target)})
                except (ValueError, OSError, RuntimeError) as err:  # one photo's problem, not the batch's
                    report["failed"].append({"input": str(photo), "error": str(err).splitlines()[0]})

    def human() -> None:
        typer.echo(f"{len(report['done'])} edited, {len(report['skipped'])} already done, "
                   f"{len(report['failed'])} failed -> {output}")
        for failure in report["failed"]:
            typer.secho(f"failed: {failure['input']}: {failure['error']}", fg=typer.colors.RED, err=True)

    emit(report, as_json, human)
    if report["failed"]:
        raise typer.Exit(1)


def register(app: Any) -> None:
    app.command("batch")(batch_command)
