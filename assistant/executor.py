"""Running plugins on a photo, in process: the one place `apply`, `run`, `edit`, `batch` (and each Ray worker)
execute plugin chains.

Consecutive diffusion plugins run as one pipeline call (CLIP features of that chain's input, 3 steps after the
first, as the official chain does); code plugins run on the image between them. The base model loads only when a
diffusion plugin is in the chain, once per executor, and stays resident for later calls; plugins stay in an LRU
cache. Every step and denoising step is reported as a `ProgressEvent`; a set `cancel` event stops the run between
denoising steps with `Cancelled`, before anything is returned (callers write results only after `run` returns).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image

from assistant.cpu_threads import use_cpu_threads
from assistant.planning.plan import Try, path_ref_problem
from assistant.plugin_cache import PluginCache, cache_key, folder_key
from plugins.errors import DiffPluginError
from plugins.progress import Progress, ProgressEvent, ProgressKind
from plugins.quoting import shown

if TYPE_CHECKING:  # torch, the pipeline and plugin code load only when a step needs them
    import torch
    from typing_extensions import TypeIs

    from assistant.judge import Seen
    from plugins.diffplugin.pipeline import ChainClip, DiffPluginPipeline, ResizeMode, StepEndCallback
    from plugins.diffplugin.plugin import TaskPlugin
    from registry.kinds import LoadedPlugin
    from registry.runtime import PythonPlugin
    from registry.store import Registry

class ExecutorError(DiffPluginError, ValueError):
    """A step that cannot run, with what to do about it."""


class OutOfMemory(ExecutorError):
    """The device ran out of memory; the executor freed what it could and stays usable."""


class Cancelled(Exception):
    """The run was cancelled between steps; no result exists."""


@dataclass
class DiffusionSettings:
    base: str | None = None  # folder or hub id; default: the pulled base in the models folder
    image_encoder: str = "openai/clip-vit-large-patch14"
    device: str | None = None  # default: CUDA, then MPS, then CPU (fp16 on CUDA)
    steps: int | None = None
    chain_steps: int = 3
    seed: int = 42
    short_side: int = 512
    resize: ResizeMode = "min"
    chain_latents: bool = False  # pass latents between chained diffusion plugins (no decode/re-encode)
    chain_clip: ChainClip = "original"  # CLIP tokens of the chain's input ('original') or of each step's ('current')
    judge: bool = True  # judge every step; try milder or other plugins when it made the photo worse, else drop it
    explore: int = 1  # plugins tried per step even when the first one is fine (the best is kept)
    compile: bool = False  # CUDA: denoiser calls as a compiled CUDA graph (a minute to compile, ~3x faster after)
    threads: int | None = None  # CPU threads (default: $DIFFPLUGIN_THREADS, else one per idle CPU)


@dataclass(frozen=True)
class StepOutcome:
    """What a judged step came to: the plugin and mix that were kept (`plugin` None: the step was dropped)."""

    index: int
    plugin: str | None
    mix: float
    tries: tuple[Try, ...]
    overrides: dict[str, Any] = field(default_factory=dict)  # the options a kept preset changed


@dataclass(frozen=True)
class Alternative:
    """Another plugin for a step's task, loaded only when the judge wants to try it."""

    name: str
    load: Callable[[], LoadedPlugin]


#: Plugins run as one step, each with its options (one code plugin, or a chain of diffusion plugins).
Group = list[tuple["LoadedPlugin", dict[str, Any]]]

#: a step's index -> other plugins for that step's task, in the order to try them.
Alternatives = Callable[[int], list[Alternative]]


@dataclass
class RunResult:
    """The edited photo, the plan steps that were kept (indices into the input, in order) and, when judged, what
    was tried and kept for each step."""

    image: PIL.Image.Image
    order: list[int]
    steps: int
    outcomes: list[StepOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[int]:
        return [i for i in range(self.steps) if i not in self.order]


@dataclass
class Executor:
    """Holds the base model once it is loaded, so a second plan or chain does not load it again."""

    settings: DiffusionSettings = field(default_factory=DiffusionSettings)
    pipe: DiffPluginPipeline | None = None
    plugins: PluginCache = field(default_factory=PluginCache)

    def __post_init__(self) -> None:
        use_cpu_threads(self.settings.threads)

    def load(self, ref: str, registry: Registry, folders: bool = True) -> LoadedPlugin:
        """A plugin folder or registered id, from the cache when it was loaded before with the same bytes.
        `folders=False` (a plan's steps): registered ids only, whatever folders exist on disk."""
        if folders and (Path(ref) / "plugin.json").is_file():
            return self.plugins.get(folder_key(Path(ref)), lambda: load_step(ref, registry))
        if folders:
            refuse_missing_folder(ref)
        else:
            refuse_folder(ref)
        if "/" not in ref:
            return load_step(ref, registry)
        from registry.runtime import runnable_status

        plugin_id, _, version = ref.partition("@")
        status = runnable_status(registry, plugin_id, version or None)  # disabled since? refused even if cached
        return self.plugins.get(cache_key(status), lambda: load_step(ref, registry))

    def run(self, image: PIL.Image.Image, loaded: Sequence[LoadedPlugin],
            params: Sequence[dict[str, Any]] | None = None,
            progress: Progress | None = None, cancel: threading.Event | None = None,
            *, mixes: Sequence[float] | None = None, names: Sequence[str] | None = None,
            alternatives: Alternatives | None = None) -> RunResult:
        """Run `loaded` plugins (TaskPlugin or PythonPlugin) in order; `params[i]` are step i's options and
        `mixes[i]` how much of its output is kept (1: all); `names[i]` is how notes name it (its plugin id).
        With `settings.judge`, every step is judged and may be replaced by a milder mix or by one of
        `alternatives(i)`, or dropped."""
        use_cpu_threads(self.settings.threads)  # the plugins are loaded now, and with them torch or OpenCV
        params = list(params) if params is not None else [{} for _ in loaded]
        mixes = list(mixes) if mixes is not None else [1.0 for _ in loaded]
        names = list(names) if names is not None else [describe(plugin)[0] for plugin in loaded]
        steps = [Planned(plugin, options, mix, name)
                 for plugin, options, mix, name in zip(loaded, params, mixes, names, strict=True)]
        run = _Run(self, len(steps), progress, cancel)
        if self.settings.judge:
            result = run.judged(image, steps, alternatives)
        else:
            result = RunResult(run.plain(image, steps), list(range(len(steps))), len(steps))
        result.notes[:0] = run.notes
        run.emit("done", len(steps), "done")
        return result

    def diffuse(self, image: PIL.Image.Image, group: list[tuple[TaskPlugin, dict[str, Any]]],
                callback_on_step_end: StepEndCallback | None = None,
                clip_image: PIL.Image.Image | None = None, continuing: bool = False) -> PIL.Image.Image:
        """One pipeline call for consecutive diffusion plugins; `continuing`: the first of them continues a chain
        (chain steps, not its own). A device out of memory becomes `OutOfMemory`, with the memory freed."""
        import torch

        options = group[0][1]
        pipe = self.base()
        s = self.settings
        steps = s.chain_steps if continuing else options.get("steps", s.steps)
        try:
            result = pipe(image, [plugin for plugin, _ in group], num_inference_steps=steps,
                          chain_num_inference_steps=s.chain_steps,
                          generator=torch.Generator().manual_seed(int(options.get("seed", s.seed))),
                          short_side=s.short_side, resize_mode=s.resize,
                          callback_on_step_end=callback_on_step_end,
                          chain_latents=s.chain_latents, chain_clip=s.chain_clip, clip_image=clip_image)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            free_device_cache(pipe.device)
            raise OutOfMemory(self._memory_advice(pipe, image)) from None
        from plugins.diffplugin.pipeline import DiffPluginPipelineOutput

        assert isinstance(result, DiffPluginPipelineOutput) and isinstance(result.images, list)  # PIL by default
        return result.images[0]

    def _memory_advice(self, pipe: DiffPluginPipeline, image: PIL.Image.Image) -> str:
        s = self.settings
        width, height = pipe.target_size(*image.size, s.short_side, s.resize)
        if s.resize == "min" and min(image.size) > s.short_side:
            fix = (f"--resize exact (the photo is processed at its own size, {width}x{height}; exact scales its "
                   f"short side to --short-side {s.short_side} and the result back)")
        else:
            fix = f"a smaller --short-side (e.g. {max(256, s.short_side // 2 // 64 * 64)})"
        return (f"{pipe.device.type} ran out of memory at {width}x{height}. Try {fix}, or --device cpu (slow), or "
                "close other programs using the GPU. Nothing was written.")

    def base(self) -> DiffPluginPipeline:
        if self.pipe is None:
            from assistant.paths import base_model_dir
            from plugins.diffplugin.pipeline import DiffPluginPipeline

            base = self.settings.base
            if base is None:
                base_dir = base_model_dir()
                if not base_dir.is_dir():
                    raise ExecutorError(f"no base model at {base_dir}: `diffplugin models pull` fetches it "
                                        "(`diffplugin models pull --base DIR --skip-plugins` copies in a diffusers "
                                        "folder you have)")
                base = str(base_dir)
            pipe = DiffPluginPipeline.from_base(base, self.settings.image_encoder, device=self.settings.device)
            pipe.set_progress_bar_config(disable=True)  # progress goes out as events
            if self.settings.compile:
                try:
                    pipe.compile_denoiser()
                except ValueError as err:
                    raise ExecutorError(f"--compile: {err} Leave --compile out.") from None
            self.pipe = pipe
        return self.pipe


class _Run:
    """One `Executor.run`: progress reporting and cancellation shared by the plain and the judged path."""

    def __init__(self, executor: Executor, total: int, progress: Progress | None,
                 cancel: threading.Event | None) -> None:
        self.executor, self.total, self.progress, self.cancel = executor, total, progress, cancel
        self.notes: list[str] = []  # what the plugins said, e.g. why one left the photo as it was

    def emit(self, kind: ProgressKind, done: int, what: str, denoise: int = 0, denoise_total: int = 0) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(kind, done, self.total, what, denoise, denoise_total))

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled; nothing was written")

    def step(self, image: PIL.Image.Image, group: Group, done: int,
             clip_image: PIL.Image.Image | None = None, continuing: bool = False) -> PIL.Image.Image:
        """Run one code plugin, or one group of diffusion plugins as a chain, reporting progress. A code plugin
        that cannot help raises `registry.errors.CannotHelp`."""
        self.check_cancel()
        plugin, options = group[0]
        if is_code_plugin(plugin):
            self.emit("step", done, plugin.manifest.id)
            out = plugin(image, **options)
            check_size(out, plugin.manifest.id)  # the next step or the save would need memory for it
            return out

        # diffusion_runs never puts a code plugin into a chain of diffusion plugins
        chain = [(p, o) for p, o in group if not is_code_plugin(p)]
        assert len(chain) == len(group)

        # Cancelling raises rather than setting the pipeline's `_interrupt`: an interrupted call still decodes and
        # returns a half-restored photo, which a cancelled edit would throw away after waiting for the decode.
        def on_denoise(pipe: DiffPluginPipeline, step: int, _: torch.Tensor, tensors: dict[str, torch.Tensor]
                       ) -> dict[str, torch.Tensor]:
            index, task = pipe.plugin_index, chain[pipe.plugin_index][0].task
            if step == 0 and index:
                self.emit("step", done + index, task)
            self.emit("denoise", done + index, task, step + 1, pipe.num_timesteps)
            self.check_cancel()
            return tensors

        self.emit("step", done, plugin.task)
        return self.executor.diffuse(image, chain, on_denoise, clip_image, continuing)

    def plain(self, image: PIL.Image.Image, steps: list[Planned]) -> PIL.Image.Image:
        from registry.errors import CannotHelp

        done = 0
        for group in diffusion_runs(steps):
            try:
                out = self.step(image, [(p.plugin, p.options) for p in group], done)
            except CannotHelp as why:
                task = describe(group[0].plugin)[1]
                self.notes.append(f"{task} skipped: {group[0].name} left the photo as it was ({why})")
                out = image
            image = blend(image, out, group[0].mix)
            done += len(group)
        return image

    def judged(self, image: PIL.Image.Image, steps: list[Planned], alternatives: Alternatives | None) -> RunResult:
        """Each step alone, judged against its input (`assistant.judge`). A step judged worse is tried with the
        plugin's presets, then milder (half and a quarter of the way from its input to its output), then with the
        other plugins for its task;
        the best acceptable result is kept, and a step nothing helps is dropped with a note saying so. Diffusion
        steps still run as one chain would (the chain input's CLIP tokens, chain steps after the first)."""
        from assistant.judge import look

        current = look(image)
        chain_start: PIL.Image.Image | None = None  # the input of the diffusion chain in progress, if any
        order: list[int] = []
        outcomes: list[StepOutcome] = []
        notes: list[str] = []
        for index, planned in enumerate(steps):
            name, task = planned.name, describe(planned.plugin)[1]
            first = Alternative(name, _given(planned.plugin))
            # The registry is asked for other plugins only when the first one is not enough.
            others = functools.partial(alternatives, index) if alternatives is not None else list
            kept, tries = self._judge_step(current, chain_start, index, task, planned, first, others)
            if kept is None:
                outcomes.append(StepOutcome(index, None, planned.mix, tuple(tries)))
                if any(t.verdict == "worse" for t in tries):
                    notes.append(f"{task} skipped: every try made the photo worse ({_summary(tries)})")
                else:  # nothing could run: the plugins said they cannot help, or would not load
                    notes.append(f"{task} skipped: " + "; ".join(f"{t.plugin} left the photo as it was ({t.reasons[0]})"
                                                                 for t in tries))
                continue
            seen, plugin, kept_try = kept.seen, kept.plugin, kept.attempt
            tries = [t.model_copy(update={"verdict": "kept"}) if t is kept_try else t for t in tries]
            outcomes.append(StepOutcome(index, kept_try.plugin, kept_try.mix, tuple(tries), kept.overrides))
            order.append(index)
            if kept_try.plugin != name or kept_try.mix != planned.mix or kept_try.preset:
                notes.append(f"{task}: kept {_named(kept_try)} ({_summary(tries)})")
            elif kept_try.better is None and kept_try.reasons:  # the judge could not measure the photo
                notes.append(f"{task}: {kept_try.reasons[0]}")
            code = is_code_plugin(plugin)
            chain_start = None if code or kept_try.mix != 1.0 else (chain_start or current.image)
            current = seen
        return RunResult(current.image, order, len(steps), outcomes, notes)

    def _judge_step(self, current: Seen, chain_start: PIL.Image.Image | None, index: int, task: str,
                    planned: Planned, first: Alternative, others: Callable[[], list[Alternative]],
                    ) -> tuple[Kept | None, list[Try]]:
        """Each candidate plugin in turn: its output as planned; when that is worse, the plugin's presets (a code
        plugin's named sets of options) at the step's mix; then the planned output half and a quarter of the way
        from the input. The first acceptable try of a candidate counts; the best of the candidates run is kept."""
        from registry.errors import RegistryError

        explore = max(1, self.executor.settings.explore)
        tries: list[Try] = []
        best: Kept | None = None
        plugins_run = 0
        for candidate in _then(first, others):
            if plugins_run >= explore and best is not None:
                break
            try:
                plugin = candidate.load()
            except (RegistryError, ExecutorError) as err:
                tries.append(Try(plugin=candidate.name, verdict="could not load", reasons=[str(err)]))
                continue
            plugins_run += 1
            code = is_code_plugin(plugin)
            options = planned.options if plugin is planned.plugin else {}
            judge = functools.partial(self._judge_try, current, index, task, candidate.name, plugin, tries)
            run = functools.partial(self.step, current.image, done=index, clip_image=None if code else chain_start,
                                    continuing=not code and chain_start is not None)
            attempt = functools.partial(self._attempt, current.image, run, candidate.name, planned.mix, tries, plugin)
            out = attempt(options)
            if out is None:
                continue
            kept = judge(out, _mixable(current.image, out, planned.mix))
            for preset, overrides in (presets(plugin, options).items() if kept is None else ()):
                other = attempt({**options, **overrides}, preset)
                if other is not None and (kept := judge(other, _mixable(current.image, other, planned.mix), preset,
                                                        overrides)):
                    break
            milder = [planned.mix / 2, planned.mix / 4] if out.size == current.image.size else []
            for mix in (milder if kept is None else ()):
                if kept := judge(out, mix):
                    break
            if kept is not None and (best is None or kept.score > best.score):
                best = kept
            if plugins_run >= explore and best is not None:  # before the next candidate is even looked up
                break
        return best, tries

    def _attempt(self, image: PIL.Image.Image, run: Callable[[Group], PIL.Image.Image], name: str, mix: float,
                 tries: list[Try], plugin: LoadedPlugin, options: dict[str, Any],
                 preset: str | None = None) -> PIL.Image.Image | None:
        """The plugin's output with `options`, or None with the try recorded when there is nothing to judge: it
        cannot help, or it changed nothing (the judge's verdict on a no-op means nothing)."""
        from registry.errors import CannotHelp

        try:
            out = run([(plugin, options)])
        except CannotHelp as why:
            reason = str(why)
        else:
            if not _unchanged(image, out):
                return out
            reason = "it changed nothing"
        tries.append(Try(plugin=name, mix=mix, preset=preset, verdict="cannot help", reasons=[reason]))
        return None

    def _judge_try(self, current: Seen, index: int, task: str, name: str, plugin: LoadedPlugin, tries: list[Try],
                   out: PIL.Image.Image, mix: float, preset: str | None = None,
                   overrides: dict[str, Any] | None = None) -> Kept | None:
        """Judge `mix` of the way from the step's input to `out`; record the try; the try when it is acceptable."""
        from assistant.judge import assess, look

        seen = look(blend(current.image, out, mix))
        verdict = assess(current, seen, task)
        attempt = Try(plugin=name, mix=mix, preset=preset, verdict="worse" if verdict.worse else "ok",
                      better=None if verdict.better is None else round(verdict.better, 3), reasons=verdict.reasons)
        tries.append(attempt)
        self.emit("check", index, f"{_named(attempt)}: {attempt.verdict}")
        return None if verdict.worse else Kept(verdict.score, seen, plugin, attempt, dict(overrides or {}))


@dataclass(frozen=True)
class Kept:
    """An acceptable try: the judge's score, the photo as it saw it, the plugin, the try, and the options a preset
    changed (empty without one)."""

    score: float
    seen: Seen
    plugin: LoadedPlugin
    attempt: Try
    overrides: dict[str, Any]


def presets(plugin: LoadedPlugin, options: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A code plugin's presets (its manifest's `python.presets`) that would change what it ran with `options`, in
    the order they are tried (a replayed plan may hold a kept preset's options already); none for other kinds."""
    spec = plugin.manifest.python if is_code_plugin(plugin) else None
    if spec is None:
        return {}
    ran = {**spec.options, **options}
    return {name: overrides for name, overrides in spec.presets.items() if {**ran, **overrides} != ran}


@dataclass(frozen=True)
class Planned:
    """A plan step as the executor runs it: the loaded plugin, its options, and how much of its output is kept."""

    plugin: LoadedPlugin
    options: dict[str, Any]  # the plan's values for the plugin's options: any JSON value
    mix: float = 1.0
    name: str = ""


def blend(before: PIL.Image.Image, after: PIL.Image.Image, mix: float) -> PIL.Image.Image:
    """`mix` of the way from `before` to `after` (1: `after` itself)."""
    if mix >= 1.0 or after.size != before.size:
        return after
    return PIL.Image.blend(before.convert("RGB"), after.convert("RGB"), mix)


def describe(plugin: LoadedPlugin) -> tuple[str, str]:
    """(name, task) of a loaded plugin: a registered code plugin's id, or a Task-Plugin's task."""
    if is_code_plugin(plugin):
        return plugin.manifest.id, plugin.manifest.tasks[0]
    manifest = getattr(plugin, "manifest", None)
    return (manifest.id if manifest is not None else plugin.task), plugin.task


def _given(plugin: LoadedPlugin) -> Callable[[], LoadedPlugin]:
    """A loader for a plugin that is already loaded."""
    return lambda: plugin


def _then(first: Alternative, others: Callable[[], list[Alternative]]) -> Iterator[Alternative]:
    """`first`, then `others()`, which is called only if the caller asks for a second candidate."""
    yield first
    yield from others()


def _unchanged(before: PIL.Image.Image, after: PIL.Image.Image) -> bool:
    """The same pixels (a plugin that found nothing to do and said so by returning its input)."""
    return (before is after or (before.size == after.size and before.mode == after.mode
                                and before.tobytes() == after.tobytes()))


def _mixable(before: PIL.Image.Image, after: PIL.Image.Image, mix: float) -> float:
    """`mix`, or 1 for a result of another size, which cannot be mixed with its input."""
    return mix if after.size == before.size else 1.0


def _at(mix: float) -> str:
    return "" if mix >= 1.0 else f" at {mix:.0%}"


def _named(attempt: Try) -> str:
    """'acme/dehaze', 'acme/dehaze [spare-whites]', 'acme/dehaze at 50%'."""
    return attempt.plugin + (f" [{attempt.preset}]" if attempt.preset else "") + _at(attempt.mix)


def _summary(tries: list[Try]) -> str:
    return "; ".join(f"{_named(t)}: {t.verdict}" + (f" ({t.better:.0%})" if t.better is not None else "")
                     for t in tries)


def is_code_plugin(plugin: LoadedPlugin) -> TypeIs[PythonPlugin]:
    from registry.runtime import PythonPlugin

    return isinstance(plugin, PythonPlugin)


def diffusion_runs(steps: list[Planned]) -> list[list[Planned]]:
    """Steps grouped for running: consecutive diffusion plugins kept whole share a list (one pipeline call); a
    code plugin, or a step whose output is mixed with its input, is a list of its own."""
    runs: list[list[Planned]] = []
    for step in steps:
        alone = is_code_plugin(step.plugin) or step.mix != 1.0
        if alone or not runs or is_code_plugin(runs[-1][0].plugin) or runs[-1][0].mix != 1.0:
            runs.append([step])
        else:
            runs[-1].append(step)
    return runs


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; MPS and some CUDA paths a RuntimeError that says so."""
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def free_device_cache(device: torch.device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def load_step(ref: str, registry: Registry) -> LoadedPlugin:
    """A Task-Plugin folder (it holds plugin.json; its files get an install's checks), else a registered plugin
    id (checked: enabled, trusted, weights' SHA-256)."""
    if (Path(ref) / "plugin.json").is_file():
        from plugins.diffplugin.plugin import TaskPlugin

        check_folder(Path(ref))
        return TaskPlugin.from_pretrained(ref)
    if "/" not in ref:
        raise ExecutorError(f"{ref}: neither a plugin folder (with plugin.json) nor a plugin id (namespace/name)")
    from registry.runtime import load_plugin

    plugin_id, _, version = ref.partition("@")
    return load_plugin(registry, plugin_id, version or None)


def check_folder(folder: Path) -> None:
    """What an install checks about a Task-Plugin's files, for a folder run without installing it: no links, no
    pickles or torch checkpoints, and both weights present as safetensors (so no loader falls back to a pickle)."""
    from plugins.diffplugin.layout import TASK_PLUGIN_WEIGHTS
    from registry.errors import InstallRefused
    from registry.files import check_safetensors, refuse_links, refuse_pickles

    refuse_links(folder)
    refuse_pickles(folder)
    for weights in TASK_PLUGIN_WEIGHTS:
        if not (folder / weights).is_file():
            raise InstallRefused(folder / weights, "missing; a Task-Plugin folder holds its weights as safetensors")
    for file in sorted(folder.rglob("*.safetensors")):
        check_safetensors(file)


def refuse_missing_folder(ref: str) -> None:
    """A path (not a `namespace/name` id) given as a plugin that is no Task-Plugin folder."""
    if not path_ref_problem(ref):
        return
    if Path(ref).expanduser().is_dir():
        raise ExecutorError(f"{ref}: not a Task-Plugin folder (it has no plugin.json)")
    from assistant.paths import models_dir

    raise ExecutorError(f"{ref}: no such plugin folder; `diffplugin models pull` writes the official plugins to "
                        f"{models_dir() / 'plugins'}/<task>")


def refuse_folder(ref: str) -> None:
    problem = path_ref_problem(ref)
    if problem:
        raise ExecutorError(problem)


#: What the executor reads from a diffusion step's options (`Executor.diffuse`), with their types.
DIFFUSION_OPTIONS: dict[str, type] = {"seed": int, "steps": int}


def known_options(plugin: LoadedPlugin) -> list[str] | None:
    """The options a loaded plugin takes (None: any): a code plugin's keyword parameters and its manifest's
    defaults, or what the executor reads for a diffusion plugin."""
    if not is_code_plugin(plugin):
        return list(DIFFUSION_OPTIONS)
    import inspect

    try:
        parameters = list(inspect.signature(plugin.function).parameters.values())[1:]  # the first is the image
    except (TypeError, ValueError):  # a callable without a signature (a C function): it must say itself
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return sorted(names | set(plugin.options))


def check_options(plugin: LoadedPlugin, options: dict[str, Any], where: str) -> None:
    """Refuse, before any work, an option the plugin does not take (`where` names the step)."""
    known = known_options(plugin)
    unknown = [name for name in options if known is not None and name not in known]
    if unknown:
        takes = f"its options are {', '.join(known)}" if known else "it takes no options"
        raise ExecutorError(f"{where}: unknown option {shown(unknown[0])}; {takes}")


def check_size(image: PIL.Image.Image, where: str) -> None:
    """Refuse a result larger than a photo may be (the limit `load_photo` sets for inputs)."""
    from plugins.data import photos

    width, height = image.size
    if width * height > photos.MAX_PIXELS:
        raise ExecutorError(f"{where} made a {width}x{height} image ({width * height / 1e6:.0f} Mpx); the limit is "
                            f"{photos.MAX_PIXELS / 1e6:.0f} Mpx")
