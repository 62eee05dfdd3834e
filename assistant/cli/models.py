"""`diffplugin models …`: the base model and the Task-Plugin weights: pull, convert, make-tiny."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assistant.cli.common import CliError, JsonOption, emit, reported
from assistant.cli.help import CliApp


def models_convert(
    source: Annotated[Path, typer.Argument(help="Official pre-trained/<task>/ folder, pre-trained/ itself, "
                                                "or plugin_selector/PromptTunner.pt.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write (a plugin folder for one "
                                                               "task; one sub-folder per task for a release).")],
    task: Annotated[str | None, typer.Option(help="Task id for a single task folder (default: its name).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Convert official Diff-Plugin weights (pickles) into safetensors plugin folders.

    Pickles are opened with torch.load(weights_only=True) only; tensor names are kept as published.
    """
    with reported(as_json):
        from plugins.diffplugin.convert import convert_official

        items = convert_official(source, output, task=task, overwrite=overwrite)

    def human() -> None:
        for item in items:
            extra = f", ignored config keys: {', '.join(item.ignored_config_keys)}" if item.ignored_config_keys else ""
            typer.echo(f"{item.kind} {item.name}: {item.tensors} tensors, {item.parameters:,} parameters "
                       f"-> {item.output}{extra}")

    emit([i.model_dump(mode="json") for i in items], as_json, human)


def models_pull(
    models_dir: Annotated[Path | None, typer.Option(help="Where to write (default: the data folder's "
                                                          "models/, see $DIFFPLUGIN_HOME).")] = None,
    base: Annotated[str, typer.Option(help="Base SD-1.x model: hub id or diffusers folder.")] =
        "CompVis/stable-diffusion-v1-4",
    image_encoder: Annotated[str, typer.Option(help="CLIP vision model: hub id or folder.")] =
        "openai/clip-vit-large-patch14",
    official: Annotated[str, typer.Option(help="URL of the official pre-trained/ folder, or a local copy "
                                               "(a clone of the official repository works too).")] =
        "https://github.com/yuhaoliu7456/Diff-Plugin/raw/main/pre-trained",
    task: Annotated[list[str] | None, typer.Option("--task", help="Only these tasks (repeatable).")] = None,
    skip_base: Annotated[bool, typer.Option("--skip-base", help="Do not fetch the base model.")] = False,
    skip_plugins: Annotated[bool, typer.Option("--skip-plugins", help="Do not fetch the plugins.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Fetch again what was pulled before (by default it is kept).")]
        = False,
    as_json: JsonOption = False,
) -> None:
    """Download the base model and the official plugins, and convert them for use.

    The official weights are licensed CC BY-NC-SA 4.0 (non-commercial).
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    from assistant.paths import models_dir as default_models_dir

    with reported(as_json), Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     disable=as_json, transient=True) as bar:
        from plugins.diffplugin.pull import OFFICIAL_TASKS, pull
        from plugins.progress import ProgressEvent

        bars: dict[str, TaskID] = {}

        def progress(event: ProgressEvent) -> None:
            if event.what not in bars:
                bars[event.what] = bar.add_task(event.what, total=event.total)
            bar.update(bars[event.what], completed=event.done)

        result = pull(models_dir or default_models_dir(), base=None if skip_base else base,
                      image_encoder=image_encoder, official=None if skip_plugins else official,
                      tasks=task or OFFICIAL_TASKS, overwrite=overwrite, progress=progress)

    def human() -> None:
        if result.base:
            typer.echo(f"base model -> {result.base}")
        if result.selector_text:
            typer.echo(f"selector text encoder -> {result.selector_text}")
        for item in result.plugins:
            typer.echo(f"{item.kind} {item.name} -> {item.output}")
        for path in result.kept:
            typer.echo(f"kept {path} (already there; --overwrite fetches it again)")
        for note in result.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW)
        if result.plugins:
            typer.secho("note: the official Diff-Plugin weights are CC BY-NC-SA 4.0: non-commercial use only.",
                        fg=typer.colors.YELLOW)

    emit(result, as_json, human)


def models_make_tiny(
    directory: Annotated[Path, typer.Argument(help="Folder to create.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights.")] = 0,
    plugin_task: Annotated[list[str] | None, typer.Option(
        "--plugin", help="Also write an untrained tiny plugin for this task under DIR/plugins/ (repeatable).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a tiny random SD-like base (UNet, VAE, CLIP vision, UniPC) in diffusers layout, for tests."""
    with reported(as_json):
        if directory.exists() and any(directory.iterdir()):
            raise CliError(f"{directory} exists and is not empty; choose a new folder.")
        from plugins.diffplugin.plugin import TaskPlugin
        from plugins.diffplugin.tiny import make_tiny_base

        pipe = make_tiny_base(directory, seed=seed)
        plugins = [str(TaskPlugin.for_base(pipe.unet, pipe.image_encoder, t, seed=seed)
                       .save_pretrained(directory / "plugins" / t)) for t in plugin_task or []]
    result = {"base": str(directory), "plugins": plugins}
    emit(result, as_json, lambda: typer.echo(f"tiny base -> {directory}" + "".join(f"\nplugin -> {p}"
                                                                                     for p in plugins)))


def register(app: CliApp) -> None:
    app.add_group("models", "Base model and Task-Plugin weights: pull, convert, make-tiny.",
                  {"convert": models_convert, "pull": models_pull, "make-tiny": models_make_tiny})
