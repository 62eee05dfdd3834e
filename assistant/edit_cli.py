"""`diffplugin plan`, `diffplugin run` and `diffplugin edit`: from a request to an edited photo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assistant.cli_common import (
    CLIP_VISION,
    BaseOption,
    ChainLatentsOption,
    ChainStepsOption,
    CliError,
    CompileOption,
    DeviceOption,
    ExploreOption,
    ImageEncoderOption,
    JsonOption,
    JudgeOption,
    OverwriteOption,
    RegistryOption,
    Resize,
    ResizeOption,
    SeedOption,
    ShortSideOption,
    StepsOption,
    diffusion_settings,
    emit,
    reported,
)

if TYPE_CHECKING:  # loaded by the commands that run plans
    import PIL.Image

    from assistant.executor import DiffusionSettings, Executor
    from assistant.planning import Plan
    from plugins.progress import Progress as StepProgress
    from registry.store import Registry

    #: Progress reporting for one photo, by its name and number of plan steps.
    PhotoProgress = Callable[[str, int], StepProgress]

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
        from assistant.photo_output import check_output, save_plan
        from assistant.planning import load_planner
        from assistant.selector.clauses import check_request
        from plugins.data.photos import load_photo

        check_request(request)
        if output:
            check_output(output, [image] if image else [], overwrite, kind="plan")
        photo = load_photo(image) if image else None
        plan = load_planner(registry, llm, llm_timeout).plan(request, photo)
        if output:
            save_plan(plan, output, overwrite)
    emit(plan.to_json(), as_json, lambda: _show(plan))


def run_command(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (.yaml or .json).")],
    inputs: Annotated[list[Path], typer.Argument(metavar="INPUT...", help="Photos to edit.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output photo, or a folder for several inputs.")],
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    device: DeviceOption = None,
    base: BaseOption = None,
    image_encoder: ImageEncoderOption = CLIP_VISION,
    steps: StepsOption = None,
    chain_steps: ChainStepsOption = 3,
    seed: SeedOption = 42,
    short_side: ShortSideOption = 512,
    resize: ResizeOption = Resize.MIN,
    chain_latents: ChainLatentsOption = False,
    judge: JudgeOption = True,
    explore: ExploreOption = 1,
    compile: CompileOption = False,
    as_json: JsonOption = False,
) -> None:
    """Replay a saved plan on one or many photos."""
    with reported(as_json):
        from assistant.photo_output import check_output
        from assistant.planning import Plan

        plan = Plan.load(plan_file)
        targets = _targets(inputs, output)
        for _, target in targets:  # all of them before any work
            check_output(target, [*inputs, plan_file], overwrite, with_plan=True)
        settings = diffusion_settings(device, short_side, resize, chain_latents, judge, explore, compile, base=base,
                                      image_encoder=image_encoder, steps=steps, chain_steps=chain_steps, seed=seed)
        results = []
        with edit_session(registry, as_json, settings) as (store, executor, progress):
            for source, target in targets:
                results.append(_edit_one(plan.model_copy(deep=True), source, target, store, executor, progress,
                                         overwrite))
    def human() -> None:
        for r in results:
            _notes(r["notes"])
            typer.echo(f"{r['input']} -> {r['output']}")

    emit({"outputs": results}, as_json, human)


def edit_command(
    photo: Annotated[Path, typer.Argument(help="The photo to edit (never modified).")],
    request: Annotated[str, typer.Argument(help="What to do with it, in your words.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result; the plan is saved "
                                                               "beside it as OUTPUT.plan.yaml.")],
    registry: RegistryOption = None,
    overwrite: OverwriteOption = False,
    llm: LLMOption = None,
    llm_timeout: LLMTimeoutOption = None,
    device: DeviceOption = None,
    base: BaseOption = None,
    image_encoder: ImageEncoderOption = CLIP_VISION,
    steps: StepsOption = None,
    chain_steps: ChainStepsOption = 3,
    seed: SeedOption = 42,
    short_side: ShortSideOption = 512,
    resize: ResizeOption = Resize.MIN,
    chain_latents: ChainLatentsOption = False,
    judge: JudgeOption = True,
    explore: ExploreOption = 1,
    compile: CompileOption = False,
    as_json: JsonOption = False,
) -> None:
    """Plan and run in one go: the edited photo, and the plan that made it beside it.

        diffplugin edit examples/photos/chelsea.jpg "it's too dark, brighten it" -o chelsea-bright.png
    """
    with reported(as_json):
        from assistant.photo_output import check_output
        from assistant.planning import load_planner
        from assistant.selector.clauses import check_request
        from plugins.data.photos import load_photo

        check_request(request)
        check_output(output, [photo], overwrite, with_plan=True)
        settings = diffusion_settings(device, short_side, resize, chain_latents, judge, explore, compile, base=base,
                                      image_encoder=image_encoder, steps=steps, chain_steps=chain_steps, seed=seed)
        image = load_photo(photo)
        plan = load_planner(registry, llm, llm_timeout).plan(request, image)
        if not plan.steps:
            raise CliError("; ".join(plan.notes) or "nothing to do")
        if not as_json:
            _show(plan)
        with edit_session(registry, as_json, settings) as (store, executor, progress):
            result = _edit_one(plan, photo, output, store, executor, progress, overwrite, image)

    def human() -> None:
        _notes(result["notes"])
        typer.echo(f"-> {output} (plan: {result['plan']})")

    emit({**result, "plan": plan.to_json()}, as_json, human)


def _edit_one(plan: Plan, source: Path, target: Path, store: Registry, executor: Executor, progress: PhotoProgress,
              overwrite: bool, image: PIL.Image.Image | None = None) -> dict[str, Any]:
    from assistant.photo_output import check_output, save_result, sidecar
    from assistant.planning import run_plan
    from plugins.data.photos import load_photo

    check_output(target, [source], overwrite, with_plan=True)
    image = image if image is not None else load_photo(source)
    result = run_plan(plan, image, store, executor, progress(source.name, len(plan.steps)))
    save_result(result.image, target, plan, overwrite)
    return {"input": str(source), "output": str(target), "plan": str(sidecar(target)), "notes": result.notes,
            "judged": [{"step": o.index + 1, "kept": o.plugin, "mix": o.mix,
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
def edit_session(registry: Path | None, quiet: bool, settings: DiffusionSettings | None = None
                 ) -> Iterator[tuple[Registry, Executor, PhotoProgress]]:
    """The registry, one executor for all photos (the base model loads once), and per-photo progress bars: plan
    steps, and the denoising steps of the diffusion plugin running now."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from assistant.executor import DiffusionSettings, Executor
    from assistant.paths import open_registry
    from plugins.progress import ProgressEvent

    store = open_registry(registry)
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

        yield store, executor, progress


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


def register(app: typer.Typer) -> None:
    app.command("edit")(edit_command)
    app.command("plan")(plan_command)
    app.command("run")(run_command)
