"""`diffplugin plan`, `run`, `edit` and `apply`: from a request, a plan or a list of plugins to an edited photo."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assistant.cli.common import (
    CliError,
    JsonOption,
    OverwriteOption,
    RegistryOption,
    diffusion_options,
    emit,
    reported,
)
from assistant.cli.help import CliApp

if TYPE_CHECKING:  # loaded by the commands that run plans
    import PIL.Image

    from assistant.executor import DiffusionSettings
    from assistant.planning import Plan
    from assistant.workers import EditContext
    from plugins.progress import Progress as StepProgress
    from registry.store import Registry

LLMOption = Annotated[str | None, typer.Option(
    "--llm", envvar="DIFFPLUGIN_LLM", help="Plan with a language model: openai:MODEL[@URL], ollama:MODEL[@URL], "
                                           "gguf:PATH or smollm2 (default: the deterministic planner).")]
# The default is given in words, not imported: importing the planning package here would slow every command.
LLMTimeoutOption = Annotated[float | None, typer.Option(
    "--llm-timeout", envvar="DIFFPLUGIN_LLM_TIMEOUT", metavar="SECONDS",
    help="How long the language model may take to answer before the deterministic plan is used, with a note "
         "(default: 120).")]


def plan_command(
    request: Annotated[str, typer.Argument(help="What to do with the photo, in your words.")],
    image: Annotated[Path | None, typer.Option(help="The photo (used when the request names no task).")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Save the plan (.yaml or .json).")] = None,
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    llm: LLMOption = None,
    llm_timeout: LLMTimeoutOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the plan for a request without running it: steps, plugins, reasons.

        diffplugin plan "clear the fog and make it brighter" -o fix.yaml
    """
    with reported(as_json):
        from assistant.paths import open_registry
        from assistant.photo_output import check_output, save_plan
        from assistant.planning import load_planner
        from assistant.selector.clauses import check_request
        from plugins.data.photos import load_photo

        check_request(request)
        if output:
            check_output(output, [image] if image else [], overwrite, kind="plan")
        photo = load_photo(image) if image else None
        plan = load_planner(open_registry(registry), llm, llm_timeout).plan(request, photo)
        if output:
            save_plan(plan, output, overwrite)
    emit(plan.to_json(), as_json, lambda: _show(plan))


@diffusion_options()
def run_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (.yaml or .json).")],
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="Photos to edit.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output photo, or a folder for several inputs.")],
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    *,
    settings: DiffusionSettings,
    as_json: JsonOption = False,
) -> None:
    """Replay a saved plan on one or many photos."""
    with reported(as_json):
        from assistant.paths import open_registry
        from assistant.photo_output import check_output
        from assistant.planning import Plan

        plan = Plan.load(plan_file)
        targets = _targets(inputs, output)
        for _, target in targets:  # all of them before any work
            check_output(target, [*inputs, plan_file], overwrite, with_plan=True)
        results = []
        with edit_context(open_registry(registry), as_json, settings) as context:
            for source, target in targets:
                results.append(_edit_one(plan.model_copy(deep=True), source, target, context, overwrite))
    def human() -> None:
        for r in results:
            _notes(r["notes"])
            typer.echo(f"{r['input']} -> {r['output']}")

    emit({"outputs": results}, as_json, human)


@diffusion_options()
def edit_command(
    photo: Annotated[Path, typer.Argument(help="The photo to edit (never modified).")],
    request: Annotated[str, typer.Argument(help="What to do with it, in your words.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result; the plan is saved "
                                                               "beside it as OUTPUT.plan.yaml.")],
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    llm: LLMOption = None,
    llm_timeout: LLMTimeoutOption = None,
    *,
    settings: DiffusionSettings,
    as_json: JsonOption = False,
) -> None:
    """Plan and run in one go: the edited photo, and the plan that made it beside it.

        diffplugin edit examples/photos/chelsea.jpg "it's too dark, brighten it" -o chelsea-bright.png
    """
    with reported(as_json):
        from assistant.paths import open_registry
        from assistant.photo_output import check_output
        from assistant.planning import load_planner
        from assistant.selector.clauses import check_request
        from plugins.data.photos import load_photo

        check_request(request)
        check_output(output, [photo], overwrite, with_plan=True)
        image = load_photo(photo)
        store = open_registry(registry)
        plan = load_planner(store, llm, llm_timeout).plan(request, image)
        if not plan.steps:
            raise CliError("; ".join(plan.notes) or "nothing to do")
        if not as_json:
            _show(plan)
        with edit_context(store, as_json, settings) as context:
            result = _edit_one(plan, photo, output, context, overwrite, image)

    def human() -> None:
        _notes(result["notes"])
        typer.echo(f"-> {output} (plan: {result['plan']})")

    emit({**result, "plan": plan.to_json()}, as_json, human)


@diffusion_options(judge=False, explore=False)
def apply_command(
    photo: Annotated[Path, typer.Argument(help="The photo to restore.")],
    plugin: Annotated[list[str], typer.Option("--plugin", "-p", help="A plugin folder or a registered plugin id "
                                                                     "(ns/name[@version]); repeat to chain, in "
                                                                     "order.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result (never the photo "
                                                               "itself).")],
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    *,
    settings: DiffusionSettings,
    as_json: JsonOption = False,
) -> None:
    """Run plugins on a photo, in the order given: Task-Plugin folders, or registered plugins of either kind.

    Consecutive diffusion plugins run as one chain (CLIP features of that chain's input, 3 steps after the
    first); code plugins run on the image between them. A photo edited only by code plugins needs no weights.
    """
    with reported(as_json):
        from assistant.executor import describe
        from assistant.paths import open_registry
        from assistant.photo_output import check_output, save_result
        from plugins.data.photos import load_photo

        check_output(output, [photo], overwrite)
        image = load_photo(photo)
        with edit_context(open_registry(registry), as_json, settings) as context:
            loaded = [context.executor.load(ref, context.registry) for ref in plugin]
            result = context.executor.run(image, loaded, progress=context.report(photo.name, len(loaded))).image
        pipe = context.executor.pipe
        save_result(result, output, overwrite=overwrite)
    processed = list(pipe.target_size(*image.size, settings.short_side, settings.resize)) if pipe else None
    names = [describe(p)[0] for p in loaded]
    summary = {"photo": str(photo), "output": str(output), "plugins": names, "size": list(result.size),
               "processed_size": processed, "seed": settings.seed}
    emit(summary, as_json, lambda: typer.echo(f"{' -> '.join(names)}: {output}"))


def _edit_one(plan: Plan, source: Path, target: Path, context: EditContext, overwrite: bool,
              image: PIL.Image.Image | None = None) -> dict[str, Any]:
    from assistant.photo_output import check_output, save_result, sidecar
    from assistant.planning import run_plan
    from plugins.data.photos import load_photo

    check_output(target, [source], overwrite, with_plan=True)
    image = image if image is not None else load_photo(source)
    result = run_plan(plan, image, context.registry, context.executor, context.report(source.name, len(plan.steps)))
    save_result(result.image, target, plan, overwrite)
    return {"input": str(source), "output": str(target), "plan": str(sidecar(target)), "notes": result.notes,
            "judged": [{"step": o.index + 1, "kept": o.plugin, "mix": o.mix, "preset_options": o.overrides,
                        "tries": [t.model_dump(mode="json", exclude_none=True) for t in o.tries]}
                       for o in result.outcomes]}


def _notes(notes: list[str]) -> None:
    for note in notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)


def _targets(inputs: list[Path], output: Path) -> list[tuple[Path, Path]]:
    if len(inputs) == 1 and output.suffix:
        return [(inputs[0], output)]
    if output.exists() and not output.is_dir():
        raise CliError(f"{output}: several inputs need an output folder")
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise CliError("two inputs have the same name; their outputs would collide")
    return [(p, output / f"{p.stem}.png") for p in inputs]


@contextmanager
def edit_context(registry: Registry, quiet: bool, settings: DiffusionSettings | None = None
                 ) -> Iterator[EditContext]:
    """What the photos of one command share: the open `registry`, one executor for all of them (the base model
    loads once), and per-photo progress bars: plan steps, and the denoising steps of the diffusion plugin running
    now (none when `quiet`)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from assistant.executor import DiffusionSettings, Executor
    from assistant.workers import EditContext
    from plugins.progress import ProgressEvent

    executor = Executor(settings or DiffusionSettings())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), disable=quiet) as bar:
        def progress(name: str, total: int) -> StepProgress:
            job = bar.add_task(name, total=total)
            denoising: list[TaskID] = []

            def show(event: ProgressEvent) -> None:
                if event.kind == "denoise":
                    if not denoising:
                        denoising.append(bar.add_task("", total=event.denoise_total))
                    bar.update(denoising[0], completed=event.denoise, total=event.denoise_total,
                               description=f"  {event.what}: denoising")
                    return
                bar.update(job, completed=event.done, description=f"{name}: {event.what}")
                if event.kind == "done" and denoising:
                    bar.remove_task(denoising.pop())

            return show

        yield EditContext(registry, executor, progress)


def _show(plan: Plan) -> None:
    if not plan.steps:
        typer.echo("No steps.")
    for number, step in enumerate(plan.steps, start=1):
        typer.echo(f"{number}. {step.task:<10} {step.plugin:<30} {step.reason}")
    if len(plan.steps) > 1:
        how = "as you asked" if plan.order == "user" else f"order policy {plan.policy_version}"
        typer.echo(f"   order: {how}")
    for note in plan.notes:
        typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)


def register(app: CliApp) -> None:
    app.command("edit")(edit_command)
    app.command("plan")(plan_command)
    app.command("run")(run_command)
    app.command("apply")(apply_command)
