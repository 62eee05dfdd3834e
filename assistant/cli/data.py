"""`diffplugin data …`: datasets for training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from assistant.cli.common import JsonOption, emit, reported
from assistant.cli.help import CliApp


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


def register(app: CliApp) -> None:
    app.add_group("data", "Datasets for training and evaluation.", {"synth": data_synth})
