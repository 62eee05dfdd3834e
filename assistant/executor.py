"""Running plugins on a photo, in process: the one place `apply`, `run`, `edit`, `batch` (and each Ray worker)
execute plugin chains.

Consecutive diffusion plugins run as one pipeline call (CLIP features of that chain's input, 3 steps after the
first, as the official chain does); code plugins run on the image between them. The base model loads only when a
diffusion plugin is in the chain, once per executor, and stays resident for later calls; plugins stay in an LRU
cache. Every step and denoising step is reported as a `ProgressEvent`; a set `cancel` event stops the run between
denoising steps with `Cancelled`, before anything is returned (callers write results only after `run` returns).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import PIL.Image

from assistant.plugin_cache import PluginCache, cache_key, folder_key


@dataclass(frozen=True)
class ProgressEvent:
    """`kind`: 'step' (plan step `done` of `total` starts: `what`), 'denoise' (`denoise` of `denoise_total`
    denoising steps of `what` are done), 'check' (a quality check's verdict, in `what`) or 'done'."""

    kind: Literal["step", "denoise", "check", "done"]
    done: int
    total: int
    what: str
    denoise: int = 0
    denoise_total: int = 0


Progress = Callable[[ProgressEvent], None]


class ExecutorError(ValueError):
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
    resize: str = "min"
    chain_latents: bool = False  # pass latents between chained diffusion plugins (no decode/re-encode)
    chain_clip: str = "original"  # CLIP tokens of the chain's input ('original') or of each step's ('current')
    quality_check: bool = False  # measure every step; skip or defer one that makes the photo worse
    max_extra_calls: int = 2  # plugin calls a quality check may add (deferred steps tried again)
    compile: bool = False  # CUDA: denoiser calls as a compiled CUDA graph (a minute to compile, ~3x faster after)


@dataclass
class RunResult:
    """The edited photo, the plan steps in the order they ran (indices into the input), and what the quality
    check saw and did."""

    image: PIL.Image.Image
    order: list[int]
    steps: int
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[int]:
        return [i for i in range(self.steps) if i not in self.order]


@dataclass
class Executor:
    """Holds the base model once it is loaded, so a second plan or chain does not load it again."""

    settings: DiffusionSettings = field(default_factory=DiffusionSettings)
    pipe: Any = None
    plugins: PluginCache = field(default_factory=PluginCache)

    def load(self, ref: str, registry: Any) -> Any:
        """A plugin folder or registered id, from the cache when it was loaded before with the same bytes."""
        if (Path(ref) / "plugin.json").is_file():
            return self.plugins.get(folder_key(Path(ref)), lambda: load_step(ref, registry))
        if "/" not in ref:
            return load_step(ref, registry)
        from registry.runtime import runnable_status

        plugin_id, _, version = ref.partition("@")
        status = runnable_status(registry, plugin_id, version or None)  # disabled since? refused even if cached
        return self.plugins.get(cache_key(status), lambda: load_step(ref, registry))

    def run(self, image: PIL.Image.Image, loaded: Sequence[Any], params: Sequence[dict[str, Any]] | None = None,
            progress: Progress | None = None, cancel: threading.Event | None = None) -> RunResult:
        """Run `loaded` plugins (TaskPlugin or PythonPlugin) in order; `params[i]` are step i's options."""
        params = list(params) if params is not None else [{} for _ in loaded]
        steps = list(zip(loaded, params, strict=True))
        run = _Run(self, len(steps), progress, cancel)
        if self.settings.quality_check:
            result = run.checked(image, steps)
        else:
            result = RunResult(run.plain(image, steps), list(range(len(steps))), len(steps))
        result.notes[:0] = run.notes
        run.emit("done", len(steps), "done")
        return result

    def diffuse(self, image: PIL.Image.Image, group: list[tuple[Any, dict[str, Any]]], callback: Any = None,
                clip_image: PIL.Image.Image | None = None, continuing: bool = False) -> PIL.Image.Image:
        """One pipeline call for consecutive diffusion plugins; `continuing`: the first of them continues a chain
        (chain steps, not its own). A device out of memory becomes `OutOfMemory`, with the memory freed."""
        import torch

        options = group[0][1]
        pipe = self.base()
        s = self.settings
        steps = s.chain_steps if continuing else options.get("steps", s.steps)
        try:
            return pipe(image, [plugin for plugin, _ in group], num_inference_steps=steps,
                        chain_num_inference_steps=s.chain_steps,
                        generator=torch.Generator().manual_seed(int(options.get("seed", s.seed))),
                        short_side=s.short_side, resize_mode=s.resize, callback=callback,
                        chain_latents=s.chain_latents, chain_clip=s.chain_clip, clip_image=clip_image).images[0]
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not is_out_of_memory(err):
                raise
            free_device_cache(pipe.device)
            raise OutOfMemory(self._memory_advice(pipe, image)) from None

    def _memory_advice(self, pipe: Any, image: PIL.Image.Image) -> str:
        s = self.settings
        width, height = pipe.target_size(*image.size, s.short_side, s.resize)
        if s.resize == "min" and min(image.size) > s.short_side:
            fix = (f"--resize exact (the photo is processed at its own size, {width}x{height}; exact scales its "
                   f"short side to --short-side {s.short_side} and the result back)")
        else:
            fix = f"a smaller --short-side (e.g. {max(256, s.short_side // 2 // 64 * 64)})"
        return (f"{pipe.device.type} ran out of memory at {width}x{height}. Try {fix}, or --device cpu (slow), or "
                "close other programs using the GPU. Nothing was written.")

    def base(self) -> Any:
        if self.pipe is None:
            from assistant.paths import models_dir
            from plugins.diffplugin.pipeline import DiffPluginPipeline

            base = self.settings.base
            if base is None:
                base_dir = models_dir() / "base"
                if not base_dir.is_dir():
                    raise ExecutorError(f"no base model at {base_dir}: run `diffplugin models pull` or pass --base.")
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
    """One `Executor.run`: progress reporting and cancellation shared by the plain and the checked path."""

    def __init__(self, executor: Executor, total: int, progress: Progress | None,
                 cancel: threading.Event | None) -> None:
        self.executor, self.total, self.progress, self.cancel = executor, total, progress, cancel
        self.notes: list[str] = []  # what the plugins said, e.g. why one left the photo as it was

    def emit(self, kind: str, done: int, what: str, denoise: int = 0, denoise_total: int = 0) -> None:
        if self.progress is not None:
            self.progress(ProgressEvent(kind, done, self.total, what, denoise, denoise_total))  # type: ignore[arg-type]

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled; nothing was written")

    def step(self, image: PIL.Image.Image, group: list[tuple[Any, dict[str, Any]]], done: int,
             clip_image: PIL.Image.Image | None = None, continuing: bool = False) -> PIL.Image.Image:
        """Run one code plugin, or one group of diffusion plugins as a chain, reporting progress."""
        self.check_cancel()
        plugin, options = group[0]
        if is_code_plugin(plugin):
            from registry.errors import CannotHelp

            self.emit("step", done, plugin.manifest.id)
            try:
                return plugin(image, **options)
            except CannotHelp as why:
                self.notes.append(f"{plugin.manifest.tasks[0]} skipped: {plugin.manifest.id} left the photo as it "
                                  f"was ({why})")
                return image

        def on_denoise(_: Any, state: dict[str, Any]) -> None:
            index = state["plugin_index"]
            if state["step"] == 0 and index:
                self.emit("step", done + index, state["task"])
            self.emit("denoise", done + index, state["task"], state["step"] + 1, state["num_steps"])
            self.check_cancel()

        self.emit("step", done, group[0][0].task)
        return self.executor.diffuse(image, group, on_denoise, clip_image, continuing)

    def plain(self, image: PIL.Image.Image, steps: list[tuple[Any, dict[str, Any]]]) -> PIL.Image.Image:
        done = 0
        for group in diffusion_runs(steps):
            image = self.step(image, group, done)
            done += len(group)
        return image

    def checked(self, image: PIL.Image.Image, steps: list[tuple[Any, dict[str, Any]]]) -> RunResult:
        """Each step alone, measured before and after. A step that makes the photo worse is tried again after
        the next step while extra calls remain, else skipped. Diffusion steps still run as one chain would (the
        chain input's CLIP tokens, chain steps after the first), decoded between steps to be measured."""
        from assistant.quality import judge, measure

        pending, order, checks, notes = list(range(len(steps))), [], [], []
        skipped, extra, budget = 0, 0, self.executor.settings.max_extra_calls
        chain_start: PIL.Image.Image | None = None  # the input of the diffusion chain in progress, if any
        before = measure(image)
        while pending:
            index = pending.pop(0)
            plugin, options = steps[index]
            code = is_code_plugin(plugin)
            out = self.step(image, [(plugin, options)], len(order) + skipped,
                            clip_image=None if code else chain_start, continuing=not code and chain_start is not None)
            after = measure(out)
            name, task = (plugin.manifest.id, plugin.manifest.tasks[0]) if code else (plugin.task, plugin.task)
            verdict = judge(before, after, task)
            checks.append({"step": index, "plugin": name, **verdict.to_json()})
            self.emit("check", len(order) + skipped, f"{name}: {'worse' if verdict.worse else 'ok'}")
            if not verdict.worse:
                if not code and chain_start is None:
                    chain_start = image
                if code:
                    chain_start = None
                image, before = out, after
                order.append(index)
                continue
            why = "; ".join(verdict.reasons)
            if pending and extra < budget:
                extra += 1
                pending.insert(1, index)
                notes.append(f"quality: step {index + 1} ({name}) made the photo worse ({why}); trying it after "
                             f"step {pending[0] + 1}")
            else:
                skipped += 1
                notes.append(f"quality: step {index + 1} ({name}) made the photo worse ({why}); skipped")
        return RunResult(image, order, len(steps), checks, notes)


def is_code_plugin(plugin: Any) -> bool:
    from registry.runtime import PythonPlugin

    return isinstance(plugin, PythonPlugin)


def diffusion_runs(steps: list[tuple[Any, dict[str, Any]]]) -> list[list[tuple[Any, dict[str, Any]]]]:
    """Steps grouped for running: consecutive diffusion plugins share a list (one pipeline call); a code plugin
    is a list of its own."""
    runs: list[list[tuple[Any, dict[str, Any]]]] = []
    for step in steps:
        if is_code_plugin(step[0]) or not runs or is_code_plugin(runs[-1][0][0]):
            runs.append([step])
        else:
            runs[-1].append(step)
    return runs


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises torch.OutOfMemoryError; MPS and some CUDA paths a RuntimeError that says so."""
    import torch

    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def free_device_cache(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def load_step(ref: str, registry: Any) -> Any:
    """A Task-Plugin folder (it holds plugin.json), else a registered plugin id (checked: enabled, trusted,
    weights' SHA-256)."""
    if (Path(ref) / "plugin.json").is_file():
        from plugins.diffplugin.plugin import TaskPlugin

        return TaskPlugin.from_pretrained(ref)
    if "/" not in ref:
        raise ExecutorError(f"{ref}: neither a plugin folder (with plugin.json) nor a plugin id (namespace/name)")
    from registry.runtime import load_plugin

    plugin_id, _, version = ref.partition("@")
    return load_plugin(registry, plugin_id, version or None)
