"""The `diffplugin` command line: a thin layer over the Python API. Heavy libraries load inside commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assistant import __version__
from assistant.batch_cli import register as register_batch_command
from assistant.chat_cli import register as register_chat_command
from assistant.cli_common import (
    CLIP_VISION,
    BaseOption,
    ChainLatentsOption,
    ChainStepsOption,
    CliError,
    CompileOption,
    DeviceOption,
    ImageEncoderOption,
    JsonOption,
    JudgeOption,
    OverwriteOption,
    QuietPipeGroup,
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
from assistant.cli_help import CliApp
from assistant.cpu_threads import THREADS_ENV
from assistant.edit_cli import register as register_edit_commands
from assistant.error_report import set_debug
from assistant.eval_cli import register as register_eval_commands
from assistant.index_cli import register as register_index_commands
from assistant.plugins_cli import plugins_app
from assistant.selector_cli import register as register_selector_commands

if TYPE_CHECKING:
    import pydantic

#: The root help's panels, in order, and their commands in order: the everyday ones first.
SECTIONS = {
    "Edit photos": ("edit", "chat", "plan", "run", "batch", "apply"),
    "Plugins": ("plugins", "select", "index"),
    "Models, training and evaluation": ("models", "train", "data", "eval"),
}


class RootGroup(QuietPipeGroup):
    """`diffplugin`: its commands listed in `SECTIONS`' panels and order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for section, names in SECTIONS.items():
            for name in names:
                if name in self.commands:
                    self.commands[name].rich_help_panel = section  # type: ignore[attr-defined]

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        order = [name for names in SECTIONS.values() for name in names]
        return sorted(super().list_commands(ctx), key=lambda name: order.index(name) if name in order else len(order))


app = CliApp(
    help="""Edit photos by asking: restoration plugins (Diff-Plugin Task-Plugins on a frozen Stable Diffusion, and
    built-in ones that need no weights), a planner and a terminal chat.

    For example:

        diffplugin edit photo.jpg "clear the fog and make it brighter" -o fixed.png
        diffplugin chat photo.jpg

    The built-in plugins work offline. The diffusion plugins need their weights, fetched once with
    `diffplugin models pull` (online); without them, try the whole workflow on a tiny random model:
    `diffplugin models make-tiny ./tiny`.
    """,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=RootGroup,
)
models_app = CliApp(help="Base model and Task-Plugin weights: pull, convert, make-tiny.", no_args_is_help=True)
train_app = CliApp(help="Train Task-Plugins on your own paired data, or the Plugin-Selector.", no_args_is_help=True)
data_app = CliApp(help="Datasets for training and evaluation.", no_args_is_help=True)
eval_app = CliApp(help="Measure the selector, plugins and step orders.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(train_app, name="train")
app.add_typer(data_app, name="data")
app.add_typer(plugins_app, name="plugins")
app.add_typer(eval_app, name="eval")
register_edit_commands(app)
register_batch_command(app)
register_chat_command(app)
register_selector_commands(app, train_app, eval_app)
register_eval_commands(eval_app)
register_index_commands(app)

def _version(value: bool) -> None:
    if value:
        print(f"diffplugin {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
    threads: Annotated[int | None, typer.Option(
        min=1, envvar=THREADS_ENV, help="CPU threads for PyTorch and OpenCV (default: one per CPU not already busy, "
                                        "so a busy machine does not stall every step).")] = None,
    debug: Annotated[bool, typer.Option(
        "--debug", help="On an internal error (a bug), print its traceback too (also: DIFFPLUGIN_DEBUG=1). It is "
                        "always written to the data folder's logs/diffplugin.log.")] = False,
) -> None:
    set_debug(debug)
    if threads is not None:  # through the environment, so batch workers and the chat's executor get it too
        os.environ[THREADS_ENV] = str(threads)


# --------------------------------------------------------------------------- models
@models_app.command("convert")
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


@models_app.command("pull")
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


@models_app.command("make-tiny")
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


# --------------------------------------------------------------------------- apply
@app.command("apply")
def apply(
    photo: Annotated[Path, typer.Argument(help="The photo to restore.")],
    plugin: Annotated[list[str], typer.Option("--plugin", "-p", help="A plugin folder or a registered plugin id "
                                                                     "(ns/name[@version]); repeat to chain, in "
                                                                     "order.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the result (never the photo "
                                                               "itself).")],
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
    judge: JudgeOption = False,
    compile: CompileOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run plugins on a photo, in the order given: Task-Plugin folders, or registered plugins of either kind.

    Consecutive diffusion plugins run as one chain (CLIP features of that chain's input, 3 steps after the
    first); code plugins run on the image between them. A photo edited only by code plugins needs no weights.
    """
    with reported(as_json):
        from assistant.edit_cli import edit_session
        from assistant.executor import describe
        from assistant.photo_output import check_output, save_result
        from plugins.data.photos import load_photo

        check_output(output, [photo], overwrite)
        image = load_photo(photo)
        settings = diffusion_settings(device, short_side, resize, chain_latents, judge, compile=compile, base=base,
                                      image_encoder=image_encoder, steps=steps, chain_steps=chain_steps, seed=seed)
        with edit_session(registry, as_json, settings) as (store, executor, progress):
            loaded = [executor.load(ref, store) for ref in plugin]
            result = executor.run(image, loaded, progress=progress(photo.name, len(loaded))).image
        pipe = executor.pipe
        save_result(result, output, overwrite=overwrite)
    processed = list(pipe.target_size(*image.size, short_side, settings.resize)) if pipe else None
    names = [describe(p)[0] for p in loaded]
    summary = {"photo": str(photo), "output": str(output), "plugins": names, "size": list(result.size),
               "processed_size": processed, "seed": seed}
    emit(summary, as_json, lambda: typer.echo(f"{' -> '.join(names)}: {output}"))


# --------------------------------------------------------------------------- train
@train_app.command("plugin")
def train_plugin_command(
    data: Annotated[Path, typer.Option(help="Paired CSV: header image,conditioning_image (clean, degraded).")],
    task: Annotated[str, typer.Option(help="Task id of the plugin, e.g. derain.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (checkpoints, validation, "
                                                               "plugin/).")],
    base: Annotated[str, typer.Option(help="Base model: hub id or folder.")] = "CompVis/stable-diffusion-v1-4",
    image_encoder: Annotated[str, typer.Option(help="CLIP vision model when BASE holds none.")] =
        "openai/clip-vit-large-patch14",
    init_plugin: Annotated[Path | None, typer.Option(help="Fine-tune this plugin folder.")] = None,
    resolution: Annotated[int, typer.Option(help="Training size (pairs resized to a square).")] = 512,
    batch_size: Annotated[int, typer.Option(help="Per-device batch size.")] = 1,
    gradient_accumulation_steps: Annotated[int, typer.Option(help="Batches per optimizer step.")] = 1,
    max_train_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 1000,
    learning_rate: Annotated[float, typer.Option(help="Base LR (scaled by the total batch unless --no-scale-lr).")]
        = 1e-5,
    scale_lr: Annotated[bool, typer.Option(help="Scale the LR by batch x accumulation x processes.")] = True,
    mixed_precision: Annotated[str | None, typer.Option(help="no, fp16 or bf16 (default: as `accelerate config` "
                                                             "or the launcher set it).")] = None,
    checkpointing_steps: Annotated[int, typer.Option(help="Save a resumable checkpoint every N steps.")] = 500,
    checkpoints_total_limit: Annotated[int | None, typer.Option(help="Keep at most N checkpoints.")] = None,
    validation_steps: Annotated[int, typer.Option(help="Validation loss and images every N steps.")] = 500,
    num_validation_images: Annotated[int, typer.Option(help="Validation strips to save.")] = 2,
    resume: Annotated[str | None, typer.Option(help="Checkpoint folder or 'latest'.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
    as_json: JsonOption = False,
) -> None:
    """Train a Task-Plugin (TPB + SCB) on a frozen base. Multi-GPU: run it under `accelerate launch`."""
    with reported(as_json):
        from pydantic import ValidationError

        from plugins.diffplugin.train import TrainConfig, train_plugin

        try:
            config = TrainConfig(
                data=data, task=task, output_dir=output, base=base, image_encoder=image_encoder,
                init_plugin=init_plugin, resolution=resolution, train_batch_size=batch_size,
                gradient_accumulation_steps=gradient_accumulation_steps, max_train_steps=max_train_steps,
                learning_rate=learning_rate, scale_lr=scale_lr, mixed_precision=mixed_precision,
                checkpointing_steps=checkpointing_steps, checkpoints_total_limit=checkpoints_total_limit,
                validation_steps=validation_steps, num_validation_images=num_validation_images,
                resume_from_checkpoint=resume, seed=seed,
            )
        except ValidationError as err:
            raise CliError(_first_validation_error(err)) from None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        # train_plugin reports on the main process only, so under `accelerate launch` one bar moves.
        with Progress(TextColumn(f"training {task}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), disable=as_json) as bar:
            job = bar.add_task("train", total=max_train_steps, loss="-")
            result = train_plugin(config, progress=lambda event: bar.update(
                job, completed=event.done, loss="-" if event.loss is None else f"{event.loss:.4f}"))
    if int(os.environ.get("RANK", "0")) != 0:  # under `accelerate launch`, one report is enough
        return
    emit(result, as_json, lambda: typer.echo(f"trained {result.global_step} steps, last loss "
                                             f"{result.last_loss:.4f}; plugin -> {result.plugin}"))


def _first_validation_error(err: pydantic.ValidationError) -> str:
    first = err.errors()[0]
    return f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg']}"


# --------------------------------------------------------------------------- data
@data_app.command("synth")
def data_synth(
    clean_dir: Annotated[Path, typer.Argument(help="Folder of clean photos.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="New dataset folder (pairs.csv, clean/, "
                                                               "degraded/).")],
    degradations: Annotated[str, typer.Option(help="Comma-separated, applied in order: haze, rain, snow, "
                                                   "blur, lowlight, noise, jpeg.")],
    per_image: Annotated[int, typer.Option(help="Degraded versions per clean photo.")] = 1,
    strength: Annotated[float, typer.Option(help="Degradation strength multiplier.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Make a paired dataset (official CSV format) from clean photos with synthetic degradations."""
    from rich.progress import Progress

    with reported(as_json), Progress(disable=as_json, transient=True) as bar:
        from plugins.data.pairs import make_paired_dataset, read_pairs

        job = bar.add_task("degrading", total=None)
        csv_path = make_paired_dataset(
            clean_dir, output, [d.strip() for d in degradations.split(",") if d.strip()], seed=seed,
            per_image=per_image, strength=strength,
            progress=lambda event: bar.update(job, completed=event.done, total=event.total),
        )
        count = len(read_pairs(csv_path))
    result = {"csv": str(csv_path), "pairs": count}
    emit(result, as_json, lambda: typer.echo(f"{count} pairs -> {csv_path}"))


def run() -> None:  # pragma: no cover - console entry point
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    run()
