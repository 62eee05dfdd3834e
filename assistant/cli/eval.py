"""`diffplugin eval …`: measure the selector, plugins and step orders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from assistant.cli.common import (
    CLIP_VISION,
    BaseOption,
    CliError,
    DeviceOption,
    ImageEncoderOption,
    JsonOption,
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
from assistant.cli.help import CliApp
from assistant.cli.selector import WeightsOption

if TYPE_CHECKING:
    import PIL.Image


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
        from assistant.paths import open_registry
        from assistant.selector import load_selector
        from assistant.selector.candidates import task_of
        from assistant.selector.evaluate import evaluate
        from assistant.selector.instructions import load_instructions

        rows = load_instructions(data, split=split)
        selector = load_selector(open_registry(registry), weights)
        job = bar.add_task("selecting", total=len(rows))
        report = evaluate(selector.select, rows, str(data), lambda ref: task_of(ref, selector.candidates),
                          progress=lambda event: bar.update(job, completed=event.done))

    def human() -> None:
        for kind, score in report.by_kind.items():
            if score.lines:
                typer.echo(f"{kind:<9} {score.accuracy:>7.1%}  ({score.correct}/{score.lines})")

    emit(report if as_json else report.by_kind, as_json, human)


def eval_plugin_command(
    plugin: Annotated[str, typer.Argument(help="A registered plugin id (namespace/name) or a plugin folder.")],
    data: Annotated[Path, typer.Option(help="Paired data: the official CSV (image,conditioning_image = clean, "
                                            "degraded) or a dataset folder (see --layout).")],
    layout: Annotated[str, typer.Option(help="How --data is laid out: auto, csv, cdd11, gopro, lol, shiq, sots or "
                                              "paired-folders.")] = "auto",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Folder for outputs/, results.json and "
                                                                       "results.csv (default: eval-NAME).")] = None,
    sheet: Annotated[Path | None, typer.Option(help="Also write a contact sheet (degraded | output | clean) here.")]
        = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N pairs.")] = None,
    subset: Annotated[str | None, typer.Option(help="Composite sets (CDD-11): only pairs with exactly these "
                                                     "degradations, e.g. haze or low_haze.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Clean reference photos for CLIP-FID and KID (clean-fid, "
                                                         "as the paper; needs clean-fid, OpenAI CLIP and their "
                                                         "weights).")] = None,
    registry: RegistryOption = None,
    device: DeviceOption = None,
    base: BaseOption = None,
    image_encoder: ImageEncoderOption = CLIP_VISION,
    steps: StepsOption = None,
    seed: SeedOption = 42,
    short_side: ShortSideOption = 512,
    resize: ResizeOption = Resize.MIN,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Run a plugin on every degraded image of a paired dataset; PSNR and SSIM of its output and of the input.

    Interrupted runs resume: images that already have an output are scored, not run again. For example:

        diffplugin eval plugin diffplugin/dehaze-classic --data haze-data/pairs.csv --sheet haze.png
    """
    with reported(as_json):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from assistant.evaluation.datasets import LAYOUTS, load_pairs
        from assistant.evaluation.plugin_eval import evaluate_plugin, sheet_for, write_report
        from assistant.executor import Executor
        from assistant.paths import open_registry
        from assistant.photo_output import check_output, save_result

        if layout != "auto" and layout not in LAYOUTS:
            raise CliError(f"--layout must be auto or one of {', '.join(LAYOUTS)}, not {layout!r}")
        if sheet is not None:
            check_output(sheet, [data], overwrite)
        pairs = load_pairs(data, layout)
        if subset is not None:
            kinds = sorted({"_".join(p.degradations) for p in pairs if p.degradations})
            pairs = [p for p in pairs if "_".join(p.degradations) == subset]
            if not pairs:
                raise CliError(f"--subset {subset}: no such pairs; this dataset has: {', '.join(kinds) or 'none'}")
        pairs = pairs[:limit]
        folder = output or Path(f"eval-{plugin.rstrip('/').replace('/', '-')}")
        store = open_registry(registry)
        executor = Executor(diffusion_settings(device, short_side, resize, judge=False, base=base,
                                               image_encoder=image_encoder, steps=steps, seed=seed))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=as_json) as bar:
            job = bar.add_task(plugin, total=len(pairs))
            report = evaluate_plugin(plugin, pairs, folder, store, executor, str(data),
                                     lambda event: bar.update(job, completed=event.done,
                                                              description=f"{plugin}: {event.what}"))
        if reference is not None:
            from assistant.evaluation.distribution import clip_fid_kid

            report.distribution = clip_fid_kid(folder / "outputs", reference, device)
        written = write_report(report)
        if sheet is not None:
            save_result(sheet_for(report, pairs), sheet, overwrite=overwrite)
            written.append(sheet)

    def human() -> None:
        mean = report.mean
        typer.echo(f"{plugin} on {len(report.images)} pairs ({report.resumed} resumed):")
        typer.echo(f"  PSNR {mean['psnr_input']:.2f} -> {mean['psnr']:.2f} dB   "
                   f"SSIM {mean['ssim_input']:.4f} -> {mean['ssim']:.4f}")
        if report.distribution is not None:
            typer.echo(f"  {report.distribution}")
        typer.echo("  wrote " + ", ".join(str(p) for p in written))

    emit(report.to_json(), as_json, human)


def eval_orders_command(
    degradations: Annotated[str, typer.Option(help="Two or more, comma-separated: haze, rain, snow, blur, lowlight, "
                                                   "noise.")],
    photos: Annotated[str, typer.Option(help="A folder of clean photos, or 'skimage' for the photos bundled with "
                                             "scikit-image.")] = "skimage",
    size: Annotated[int, typer.Option(help="Scale each photo's short side to this (speed).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic degradations.")] = 0,
    draws: Annotated[int, typer.Option(min=1, help="Degrade each photo this many times (different random draws), "
                                                   "for more evidence per photo.")] = 1,
    max_steps: Annotated[int, typer.Option(min=2, help="Largest combination of degradations tried (every order of "
                                                       "k steps is k! runs).")] = 3,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write the evidence (JSON) here.")] = None,
    write_policy: Annotated[bool, typer.Option(help="Write the planner's order policy from this evidence (to "
                                                    "--policy-file). Every later plan uses it; the policy it "
                                                    "replaces is kept beside it as .bak, and named.")] = False,
    policy_file: Annotated[Path | None, typer.Option(help="Where --write-policy writes (default: the data folder's "
                                                          "order_policy.yaml, which the planner then uses).")]
        = None,
    registry: RegistryOption = None,
    device: DeviceOption = None,
    base: BaseOption = None,
    image_encoder: ImageEncoderOption = CLIP_VISION,
    overwrite: OverwriteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Which order of two restoration steps wins, measured on synthetic degradations.

    Degrades clean photos with every combination of the degradations, runs every order of the matching plugins,
    and says which order wins for each pair of tasks. For example:

        diffplugin eval orders --degradations rain,haze,lowlight --write-policy
    """
    with reported(as_json):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from assistant.evaluation.orders import evaluate_orders, policy_from
        from assistant.executor import Executor
        from assistant.paths import open_registry
        from assistant.photo_output import check_output, save_text
        from assistant.planning.policy import OrderPolicy, user_policy_file, write_policy_file

        if policy_file is not None and not write_policy:
            raise CliError("--policy-file needs --write-policy")
        for target in (output, policy_file):  # the default policy file is ours to replace; a named one is not
            if target is not None:
                check_output(target, [], overwrite, kind="plan")
        names = [d.strip() for d in degradations.split(",") if d.strip()]
        clean = _clean_photos(photos, size)
        if draws > 1:
            clean = [(f"{name}#{k}", image) for k in range(draws) for name, image in clean]
        store = open_registry(registry)
        executor = Executor(diffusion_settings(device, size, Resize.EXACT, judge=False, base=base,
                                               image_encoder=image_encoder))
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      disable=as_json) as bar:
            job = bar.add_task("orders", total=None)
            evidence = evaluate_orders(clean, names, store, executor, seed, max_steps,
                                       lambda event: bar.update(job, completed=event.done, total=event.total,
                                                                description=event.what))
        result = evidence.to_json()
        if output is not None:
            import json

            save_text(output, json.dumps(result, indent=2) + "\n", overwrite)
        if write_policy:
            target = policy_file or user_policy_file()
            policy = policy_from(evidence, OrderPolicy.load())
            replaced = _keep_replaced_policy(target) if target.is_file() else None
            write_policy_file(policy, target, overwrite=overwrite or policy_file is None)
            result["policy"] = {"file": str(target), "version": policy.version, "used_by_plans": policy_file is None,
                                "replaced": replaced}

    def human() -> None:
        typer.echo(f"{len(evidence.photos)} photos, plugins: {', '.join(evidence.plugins.values())}")
        for pair in result["pairs"]:
            typer.echo(f"  {pair['a']} then {pair['b']}: wins {pair['a_then_b_wins']} of {pair['photos']}, "
                       f"{pair['mean_psnr_gain_db']:+.2f} dB -> {pair['verdict']}")
        if "policy" in result:
            typer.echo(_policy_line(result["policy"]))

    emit(result, as_json, human)


def _keep_replaced_policy(target: Path) -> dict[str, str | None]:
    """Copy the policy file about to be replaced to FILE.bak; its version and the copy, for the report."""
    import yaml

    from assistant.photo_output import save_text
    from assistant.planning.policy import OrderPolicy

    text = target.read_text(encoding="utf-8")
    try:
        version: str | None = OrderPolicy.load(target).version
    except (ValueError, yaml.YAMLError):  # a policy file someone broke: still kept, but it has no version to name
        version = None
    backup = target.with_name(target.name + ".bak")
    save_text(backup, text, overwrite=True)
    return {"version": version, "backup": str(backup)}


def _policy_line(policy: dict[str, Any]) -> str:
    """What --write-policy did, in one line: what it replaced, and whether plans now use it."""
    written = f"order policy {policy['version']} -> {policy['file']}"
    if policy["replaced"] is not None:
        old = policy["replaced"]
        written += f" (replaced {old['version'] or 'an unreadable policy'}, kept as {old['backup']})"
    return written + ("; every later plan uses it" if policy["used_by_plans"] else "")


def _clean_photos(source: str, size: int) -> list[tuple[str, PIL.Image.Image]]:
    from plugins.data.pairs import list_images
    from plugins.data.photos import load_photo, sample_photos, with_short_side

    if size < 16:
        raise CliError(f"--size must be at least 16, got {size}")
    if source == "skimage":
        named = sample_photos()
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise CliError(f"--photos {source}: not a folder (or 'skimage')")
        named = [(path.stem, load_photo(path)) for path in list_images(folder)]
        if not named:
            raise CliError(f"--photos {source}: no photos in it")
    return [(name, with_short_side(image, size)) for name, image in named]


def register(app: CliApp) -> None:
    app.add_group("eval", "Measure the selector, plugins and step orders.",
                  {"selector": eval_selector_command, "plugin": eval_plugin_command, "orders": eval_orders_command})
