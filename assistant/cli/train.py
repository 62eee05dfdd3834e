"""`diffplugin train …`: Task-Plugins on your own paired data, and the Plugin-Selector."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from assistant.cli.common import CliError, JsonOption, emit, reported
from assistant.cli.help import CliApp

if TYPE_CHECKING:
    import pydantic


def train_selector_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write the trained selector to.")],
    data: Annotated[list[Path] | None, typer.Option(help="Instruction files (JSON lines; only `split: train` "
                                                         "lines are used) to train the encoder on. Default: "
                                                         "the shipped ones.")] = None,
    examples: Annotated[list[Path] | None, typer.Option(help="Instruction files the trained selector compares "
                                                             "requests with (its examples), instead of the "
                                                             "training requests. Default: with --data, those; "
                                                             "without, the shipped example files.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same data: same weights).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it holds a selector.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Train the offline Plugin-Selector (MiniLM + LoRA, contrastive across tasks). A few minutes on CPU.

    Use it with `diffplugin select --weights OUTPUT`, or copy it over the shipped one.
    """
    with reported(as_json):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from assistant.selector.instructions import load_instructions
        from assistant.selector.model import CONFIG_FILE
        from assistant.selector.train import SelectorTrainConfig, train_selector

        if (output / CONFIG_FILE).exists() and not overwrite:
            raise CliError(f"{output} already holds a selector; pass --overwrite to replace it.")
        if steps < 1:
            raise CliError("--steps must be at least 1.")
        rows = [r for path in data for r in load_instructions(path, split="train")] if data else None
        bank = [r for path in examples for r in load_instructions(path, split="train")] if examples else None
        with Progress(TextColumn("training selector"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), disable=as_json) as bar:
            task = bar.add_task("train", total=steps, loss="-")
            folder = train_selector(SelectorTrainConfig(steps=steps, seed=seed), rows, output,
                                    progress=lambda event: bar.update(task, completed=event.done,
                                                                      loss=f"{event.loss:.3f}"),
                                    examples=bank)
        import json

        record = json.loads((folder / CONFIG_FILE).read_text())["training"]
    emit({"output": str(folder), **record}, as_json,
         lambda: typer.echo(f"trained on {record['requests']} requests ({record['clauses']} clauses), "
                            f"final loss {record['final_loss']}; {record['bank_requests']} requests as examples: "
                            f"{folder}"))


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


def register(app: CliApp) -> None:
    app.add_group("train", "Train Task-Plugins on your own paired data, or the Plugin-Selector.",
                  {"selector": train_selector_command, "plugin": train_plugin_command})
