"""`diffplugin select`, `diffplugin train selector` and `diffplugin eval selector`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assistant.cli_common import CliError, JsonOption, RegistryOption, emit, reported

WeightsOption = Annotated[Path | None, typer.Option(
    help="A trained selector folder (default: the one that ships with diffplugin).")]


def select(
    text: Annotated[str, typer.Argument(help="What to do with the photo, in your words.")],
    image: Annotated[Path | None, typer.Option(help="The photo: with the paper's selector weights pulled, "
                                                    "its image features are used too.")] = None,
    registry: RegistryOption = None,
    weights: WeightsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which plugins a request asks for, in the order you named them; none if no plugin does it.

        diffplugin select "remove the rain, then brighten it"
    """
    with reported(as_json):
        from assistant.selector import load_selector
        from assistant.selector.clauses import check_request

        check_request(text)
        selector = load_selector(registry, weights, image=image)
        selection = selector.select(str(text))

    def human() -> None:
        if selection.rejected:
            typer.echo("No plugin does that (out of scope).")
        for plugin in selection.plugins:
            typer.echo(f"{plugin.task:<10} {plugin.id:<28} {plugin.score:.2f}  \"{selection.clauses[plugin.clause]}\"")
        for note in selection.notes:
            typer.secho(f"note: {note}", fg=typer.colors.YELLOW, err=True)

    emit(selection.to_json(), as_json, human)


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


def eval_selector_command(
    data: Annotated[Path, typer.Option(help="JSON lines: {\"text\": ..., \"expect\": [plugin ids or tasks]}; "
                                            "[] means out of scope.")],
    split: Annotated[str | None, typer.Option(help="Only lines with this `split` (e.g. val).")] = None,
    registry: RegistryOption = None,
    weights: WeightsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Exact-set accuracy (by task) on single-task, compound and out-of-scope requests.

    With --json, every line's prediction in the `select` format too.
    """
    from rich.progress import Progress

    with reported(as_json), Progress(disable=as_json, transient=True) as bar:
        from assistant.selector import load_selector
        from assistant.selector.candidates import task_of
        from assistant.selector.evaluate import evaluate
        from assistant.selector.instructions import load_instructions

        rows = load_instructions(data, split=split)
        selector = load_selector(registry, weights)
        job = bar.add_task("selecting", total=len(rows))
        report = evaluate(selector.select, rows, str(data), lambda ref: task_of(ref, selector.candidates),
                          progress=lambda event: bar.update(job, completed=event.done))

    def human() -> None:
        for kind, score in report.by_kind.items():
            if score.lines:
                typer.echo(f"{kind:<9} {score.accuracy:>7.1%}  ({score.correct}/{score.lines})")

    emit(report if as_json else report.by_kind, as_json, human)


def register(app: typer.Typer, train_app: typer.Typer, eval_app: typer.Typer) -> None:
    app.command("select")(select)
    train_app.command("selector")(train_selector_command)
    eval_app.command("selector")(eval_selector_command)
