"""What every `diffplugin` command shares: one-line errors, --json output."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from assistant.cli.help import HelpGroup
from plugins.errors import DiffPluginError

if TYPE_CHECKING:
    from assistant.executor import DiffusionSettings

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
OverwriteOption = Annotated[bool, typer.Option(help="Replace OUTPUT if it exists (the input never is).")]
RegistryOption = Annotated[Path | None, typer.Option(
    "--registry", envvar="DIFFPLUGIN_REGISTRY", help="Registry folder (default: the data folder's registry/).")]
#: A group's --registry (`diffplugin plugins --registry DIR list`): its subcommands take the folder from it.
GroupRegistryOption = Annotated[Path | None, typer.Option(
    "--registry", envvar="DIFFPLUGIN_REGISTRY",
    help="Registry folder (default: the data folder's registry/, see $DIFFPLUGIN_HOME).")]
# On each subcommand of such a group too (`plugins list --registry DIR`); without an environment variable, so that a
# folder given before the subcommand is not overridden by $DIFFPLUGIN_REGISTRY, which the group reads.
SubRegistryOption = Annotated[Path | None, typer.Option(
    "--registry", help="Registry folder (default: as given before the subcommand, else $DIFFPLUGIN_REGISTRY, "
                       "else the data folder's registry/).")]


# The options of every command that edits photos, in one panel of its help.
DIFFUSION = "Diffusion options"
#: The CLIP vision model used when the base model folder holds none (as the official code).
CLIP_VISION = "openai/clip-vit-large-patch14"

DeviceOption = Annotated[str | None, typer.Option(
    help="cuda, cuda:1, mps or cpu (default: CUDA, then Apple MPS, then CPU; fp16 on CUDA).",
    rich_help_panel=DIFFUSION)]
BaseOption = Annotated[str | None, typer.Option(
    help="Base model: a diffusers folder or hub id (default: the pulled base, see `diffplugin models pull`).",
    rich_help_panel=DIFFUSION)]
ImageEncoderOption = Annotated[str, typer.Option(
    help="CLIP vision model when --base holds none.", rich_help_panel=DIFFUSION)]
StepsOption = Annotated[int | None, typer.Option(
    min=1, help="Denoising steps of a diffusion plugin (default: the plan's, else the plugin's own, 20).",
    rich_help_panel=DIFFUSION)]
ChainStepsOption = Annotated[int, typer.Option(
    min=1, help="Denoising steps of every later diffusion plugin of a chain.", rich_help_panel=DIFFUSION)]
SeedOption = Annotated[int, typer.Option(help="Random seed of the diffusion plugins.", rich_help_panel=DIFFUSION)]
ShortSideOption = Annotated[int, typer.Option(
    help="Process diffusion plugins with the photo's short side at least this (lower it if memory runs out).",
    rich_help_panel=DIFFUSION)]


class Resize(StrEnum):
    """`--resize`: how a diffusion plugin's input is sized (`plugins.diffplugin.pipeline.ResizeMode`)."""

    MIN = "min"
    EXACT = "exact"


ResizeOption = Annotated[Resize, typer.Option(
    help="'min': never shrink, only enlarge a photo whose short side is under --short-side (official infer.py); "
         "'exact': scale the short side to --short-side and the result back (official demo; bounds memory).",
    rich_help_panel=DIFFUSION)]
ChainLatentsOption = Annotated[bool, typer.Option(
    help="Chained diffusion plugins pass latents on instead of decoding and re-encoding (faster; not the "
         "official behaviour).", rich_help_panel=DIFFUSION)]
JudgeOption = Annotated[bool, typer.Option(
    "--judge/--no-judge", help="Judge every step against its input; when it made the photo worse, try it milder "
                               "and try the other plugins for its task, keep the best, or drop the step and say "
                               "so. A saved plan records what was tried and kept.", rich_help_panel=DIFFUSION)]
ExploreOption = Annotated[int, typer.Option(
    min=1, help="With the judge: try up to N plugins for each step even when the first is fine, and keep the "
                "best.", rich_help_panel=DIFFUSION)]

CompileOption = Annotated[bool, typer.Option(
    "--compile", help="CUDA only: compile the denoiser into a CUDA graph. The first photo of each size waits "
                      "about a minute; every later one runs about 3x faster. For batches and long sessions.",
    rich_help_panel=DIFFUSION)]


def diffusion_settings(device: str | None = None, short_side: int = 512, resize: Resize = Resize.MIN,
                       chain_latents: bool = False, judge: bool = True, explore: int = 1, compile: bool = False,
                       **more: Any) -> DiffusionSettings:
    """The executor's settings from the options `edit`, `run` and `batch` share."""
    from assistant.executor import DiffusionSettings

    if short_side < 8:  # the SD VAE's factor: anything smaller has no latent pixel
        raise CliError(f"--short-side must be at least 8, got {short_side}")
    if compile:
        _refuse_compile_off_cuda(device)
    return DiffusionSettings(device=device, short_side=short_side, resize=resize.value,
                             chain_latents=chain_latents,
                             judge=judge, explore=explore, compile=compile, **more)


#: A command that edits photos, as `diffusion_options` takes and gives it.
EditCommand = Callable[..., None]


def diffusion_options(*, judge: bool = True, explore: bool = True) -> Callable[[EditCommand], EditCommand]:
    """The diffusion options, declared once for every command that edits (`edit`, `run`, `batch`, `apply`).

    The command has a keyword-only parameter `settings: DiffusionSettings` where the options go: Typer sees them in its
    signature (in this order, in the "Diffusion options" panel), and the command gets one `DiffusionSettings`
    from `diffusion_settings()`, whose refusals (--short-side, --compile off CUDA) are the command's one-line error.
    `judge`: --judge's default; `explore=False`: no --explore (the judge then tries one plugin per step).
    """
    options = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
        for name, annotation, default in (
            ("device", DeviceOption, None),
            ("base", BaseOption, None),
            ("image_encoder", ImageEncoderOption, CLIP_VISION),
            ("steps", StepsOption, None),
            ("chain_steps", ChainStepsOption, 3),
            ("seed", SeedOption, 42),
            ("short_side", ShortSideOption, 512),
            ("resize", ResizeOption, Resize.MIN),
            ("chain_latents", ChainLatentsOption, False),
            ("judge", JudgeOption, judge),
            *((("explore", ExploreOption, 1),) if explore else ()),
            ("compile", CompileOption, False),
        )
    ]

    def decorate(command: EditCommand) -> EditCommand:
        # Typer reads the signature with its annotations evaluated. `settings`'s type is imported for type checking
        # only (the executor module is slow to import), and that parameter is replaced: None may stand for it.
        own = list(inspect.signature(command, eval_str=True, locals={"DiffusionSettings": None}).parameters.values())
        at = [parameter.name for parameter in own].index("settings")
        parameters = [*own[:at], *options, *own[at + 1:]]

        @functools.wraps(command)
        def with_settings(**kwargs: Any) -> None:
            values = {option.name: kwargs.pop(option.name) for option in options}
            with reported(kwargs["as_json"]):
                settings = diffusion_settings(**values)
            command(**kwargs, settings=settings)

        with_settings.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
        with_settings.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
        return with_settings

    return decorate


def _refuse_compile_off_cuda(device: str | None) -> None:
    """--compile is CUDA only: said at once, before a model loads (and also when no diffusion plugin runs)."""
    from plugins.diffplugin.hardware import pick_device  # imports torch: only with --compile

    where = pick_device(device).type
    if where != "cuda":
        raise CliError(f"--compile needs a CUDA GPU; this run would be on {where}. Leave --compile out.")


class CliError(DiffPluginError):
    """An error to show the user as one line, exiting 1."""


# C0 and C1 control characters (tab and newline kept) and the Unicode bidirectional controls: from a file someone
# else wrote (a manifest, an error quoting one), they would move the cursor, retitle or recolour the terminal, or
# make text read otherwise than it is stored ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """`text` safe to print on a terminal: control characters shown as escapes (`\\x1b`) instead of obeyed."""
    return _UNPRINTABLE.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), str(text))


class QuietPipeGroup(HelpGroup):
    """The root command. When the reader of its output stops early (`diffplugin plugins list | head -3`), the
    command ends quietly with status 0, as command-line tools do; Click and Rich would exit 1."""

    # Typer passes a typer.Context; the base class names its parent, from Typer's private copy of Click
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            ctx.exit(0)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        was_null = _stdout_is_null()
        try:
            return super().main(*args, **kwargs)
        except SystemExit as done:
            # Rich (tables, help) answers a closed pipe by pointing stdout at /dev/null and exiting 1.
            broken = done.code == 1 and not was_null and _stdout_is_null()
            try:
                sys.stdout.flush()  # what print() still buffers: here, not in Python's shutdown, which would fail
            except BrokenPipeError:
                _silence_stdout()
            raise SystemExit(0 if broken else done.code) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that nothing still buffered for the gone reader can fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _stdout_is_null() -> bool:
    try:
        here, null = os.fstat(1), os.stat(os.devnull)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (null.st_dev, null.st_ino)


@contextmanager
def reported(as_json: bool) -> Iterator[None]:
    """Turn failures into one line (or a JSON error object): a user error exits 1, a bug exits 70 and leaves its
    traceback in the log (assistant/error_report.py says which is which)."""
    from assistant.error_report import debug_enabled, describe
    from assistant.executor import Cancelled

    try:
        yield
    except (Cancelled, KeyboardInterrupt):
        message = "cancelled; no partial result was written"
        if as_json:
            print(json.dumps({"error": message, "type": "Cancelled"}))
        else:
            typer.secho(message, fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, BrokenPipeError):
        raise  # Click's own ways out (typer.Exit is a RuntimeError), and a reader gone (QuietPipeGroup's)
    except Exception as err:
        failure = describe(err)
        if failure.details and debug_enabled():
            typer.echo(printable(failure.details), err=True, nl=False)
        if as_json:
            print(json.dumps(failure.to_json()))
        else:
            typer.secho(printable(failure.line()), fg=typer.colors.RED, err=True)
        raise typer.Exit(failure.exit_code) from None


def emit(result: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
        print(json.dumps(data, indent=2))
    else:
        human()


def print_schema(schema: dict[str, Any], output: Path | None, as_json: bool) -> None:
    """A JSON Schema (`plugins schema`, `index schema`): to `output`, or printed (it is JSON either way)."""
    text = json.dumps(schema, indent=2) + "\n"
    if output is not None:
        output.write_text(text)
        emit({"schema": str(output)}, as_json, lambda: typer.echo(f"schema -> {output}"))
    else:
        typer.echo(text, nl=False)
