"""The executor: progress events, cancellation, out-of-memory recovery, chain options, the quality check,
the plugin-folder cache and compile's CUDA requirement."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
import torch
import yaml

from assistant.executor import Cancelled, DiffusionSettings, Executor, ExecutorError, OutOfMemory, ProgressEvent
from registry.errors import CannotHelp
from registry.manifest import PluginManifest
from registry.runtime import PythonPlugin

#: Small enough that the tiny base (VAE factor 2) runs in well under a second per plugin.
SMALL = {"short_side": 32, "steps": 4, "chain_steps": 2}


def executor_on(pipe, **settings) -> Executor:
    return Executor(DiffusionSettings(**{**SMALL, **settings}), pipe=pipe)


def code_plugin(task: str, function) -> PythonPlugin:
    manifest = PluginManifest.model_validate(yaml.safe_load(f"""
schema_version: "1.0"
id: test/{task}
version: 1.0.0
name: {task}
description: A test plugin.
tasks: [{task}]
examples: [do {task}, please {task} it, {task} the photo]
kind: python
python: {{entry_point: "x:y"}}
license: MIT
authors: [{{name: Test}}]
"""))
    return PythonPlugin(manifest, function)


def pixels(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_progress_reports_plan_steps_and_denoising_steps(tiny_pipe, make_plugin, photo) -> None:
    events: list[ProgressEvent] = []
    executor_on(tiny_pipe).run(photo, [make_plugin("derain"), make_plugin("dehaze", seed=2)], progress=events.append)
    steps = [(e.done, e.what) for e in events if e.kind == "step"]
    assert steps == [(0, "derain"), (1, "dehaze")]
    denoise = [(e.what, e.denoise, e.denoise_total) for e in events if e.kind == "denoise"]
    assert denoise == [("derain", i, 4) for i in range(1, 5)] + [("dehaze", i, 2) for i in range(1, 3)]
    assert events[-1] == ProgressEvent("done", 2, 2, "done")


def test_cancel_stops_between_denoising_steps_and_the_executor_stays_usable(tiny_pipe, make_plugin, photo) -> None:
    executor, plugin = executor_on(tiny_pipe), make_plugin()
    cancel, seen = threading.Event(), []

    def on_event(event: ProgressEvent) -> None:
        seen.append(event)
        if event.kind == "denoise" and event.denoise == 2:
            cancel.set()

    with pytest.raises(Cancelled):
        executor.run(photo, [plugin], progress=on_event, cancel=cancel)
    assert max(e.denoise for e in seen) == 2 and seen[-1].kind == "denoise"  # stopped right after step 2
    again = executor.run(photo, [plugin]).image
    assert np.array_equal(pixels(again), pixels(executor_on(tiny_pipe).run(photo, [plugin]).image))


@pytest.mark.parametrize(("resize", "advice"), [("min", "--resize exact"), ("exact", "a smaller --short-side")])
def test_out_of_memory_is_one_clear_error_and_the_next_edit_works(tiny_pipe, make_plugin, photo, monkeypatch,
                                                                   resize: str, advice: str) -> None:
    executor, plugin = executor_on(tiny_pipe, resize=resize), make_plugin()
    expected = executor.run(photo, [plugin]).image
    real = tiny_pipe.denoiser

    def fails_once(*args, **kwargs):
        monkeypatch.setattr(tiny_pipe, "denoiser", real)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tiny_pipe, "denoiser", fails_once)
    with pytest.raises(OutOfMemory) as raised:
        executor.run(photo, [plugin])
    assert advice in str(raised.value) and "--device cpu" in str(raised.value)
    assert np.array_equal(pixels(executor.run(photo, [plugin]).image), pixels(expected))


def test_other_runtime_errors_are_not_called_out_of_memory(tiny_pipe, make_plugin, photo, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(tiny_pipe, "denoiser", broken)
    with pytest.raises(RuntimeError, match="shapes") as raised:
        executor_on(tiny_pipe).run(photo, [make_plugin()])
    assert not isinstance(raised.value, OutOfMemory)


def _count(monkeypatch, pipe, name: str) -> list[int]:
    calls, real = [0], getattr(pipe, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pipe, name, counted)
    return calls


def test_chain_options_skip_vae_round_trips_or_add_clip_passes(tiny_pipe, make_plugin, photo, monkeypatch) -> None:
    chain = [make_plugin("derain"), make_plugin("dehaze", seed=2), make_plugin("lowlight", seed=3)]
    encodes, decodes = _count(monkeypatch, tiny_pipe, "encode_condition"), _count(monkeypatch, tiny_pipe, "decode")
    clips = _count(monkeypatch, tiny_pipe, "encode_clip_tokens")
    results = {}
    for name, options in {"official": {}, "latents": {"chain_latents": True},
                          "clip": {"chain_clip": "current"}}.items():
        encodes[0] = decodes[0] = clips[0] = 0
        results[name] = pixels(executor_on(tiny_pipe, **options).run(photo, chain).image)
        results[name + " calls"] = (encodes[0], decodes[0], clips[0])
    assert results["official calls"] == (3, 3, 1)
    assert results["latents calls"] == (1, 1, 1)
    assert results["clip calls"] == (3, 3, 3)
    assert results["official"].shape == results["latents"].shape == results["clip"].shape
    assert not np.array_equal(results["official"], results["latents"])
    assert not np.array_equal(results["official"], results["clip"])


def blur(image: PIL.Image.Image) -> PIL.Image.Image:
    return image.filter(PIL.ImageFilter.GaussianBlur(4))


def warmer(image: PIL.Image.Image) -> PIL.Image.Image:
    """A mild, harmless edit: a 4% lift of the red channel."""
    r, g, b = image.convert("RGB").split()
    return PIL.Image.merge("RGB", (r.point(lambda v: min(255, round(v * 1.04))), g, b))


def test_quality_check_defers_then_skips_a_step_that_makes_the_photo_worse(photo) -> None:
    large = photo.resize((320, 212))
    steps = [code_plugin("soften", blur), code_plugin("warm", warmer)]
    result = Executor(DiffusionSettings(quality_check=True)).run(large, steps)
    assert result.order == [1] and result.skipped == [0]
    assert "trying it after step 2" in result.notes[0] and "skipped" in result.notes[1]
    assert "sharpness" in result.notes[0]
    assert [c["step"] for c in result.checks] == [0, 1, 0] and [c["worse"] for c in result.checks] == [True,
                                                                                                     False, True]
    assert np.array_equal(pixels(result.image), pixels(warmer(large)))
    no_retries = Executor(DiffusionSettings(quality_check=True, max_extra_calls=0)).run(large, steps)
    assert len(no_retries.checks) == 2 and no_retries.order == [1]
    unchecked = Executor().run(large, steps)
    assert unchecked.order == [0, 1] and not unchecked.checks
    assert np.array_equal(pixels(unchecked.image), pixels(warmer(blur(large))))


@pytest.mark.parametrize("quality_check", [False, True])
def test_a_plugin_that_cannot_help_leaves_the_photo_as_it_was_and_says_why(photo, quality_check: bool) -> None:
    def refuses(image: PIL.Image.Image) -> PIL.Image.Image:
        raise CannotHelp("no streaks in this photo")

    steps = [code_plugin("derain", refuses), code_plugin("warm", warmer)]
    result = Executor(DiffusionSettings(quality_check=quality_check)).run(photo, steps)
    assert np.array_equal(pixels(result.image), pixels(warmer(photo)))  # the next step ran on the untouched photo
    assert result.notes[0] == "derain skipped: test/derain left the photo as it was (no streaks in this photo)"


def test_quality_check_keeps_steps_that_do_no_harm(photo) -> None:
    large = photo.resize((320, 212))
    result = Executor(DiffusionSettings(quality_check=True)).run(large, [code_plugin("warm", warmer)] * 2)
    assert result.order == [0, 1] and not result.notes and len(result.checks) == 2


def test_plugin_folders_are_cached_until_their_files_change(tiny_pipe, make_plugin, tmp_path: Path) -> None:
    folder = make_plugin().save_pretrained(tmp_path / "derain")
    executor = Executor()
    first = executor.load(str(folder), None)
    assert executor.load(str(folder), None) is first
    make_plugin(seed=5).save_pretrained(folder)  # new weights in the same folder
    reloaded = executor.load(str(folder), None)
    assert reloaded is not first
    assert not torch.equal(reloaded.scb.controlnet_down_blocks[0].weight, first.scb.controlnet_down_blocks[0].weight)


def test_compile_needs_cuda(tiny_base_dir: Path) -> None:
    executor = Executor(DiffusionSettings(base=str(tiny_base_dir), device="cpu", compile=True))
    with pytest.raises(ExecutorError, match="CUDA"):
        executor.base()


def test_checked_diffusion_steps_still_run_as_one_chain(tiny_pipe, make_plugin, photo, monkeypatch) -> None:
    """Judged harmless, later diffusion steps continue the chain: chain steps, the chain input's CLIP tokens."""
    import assistant.quality as quality

    monkeypatch.setattr(quality, "judge", lambda before, after, task: quality.Verdict(False, [], before, after))
    clip_inputs: list[np.ndarray] = []
    real = tiny_pipe.encode_clip_tokens
    monkeypatch.setattr(tiny_pipe, "encode_clip_tokens", lambda image: clip_inputs.append(pixels(image)) or real(image))
    events: list[ProgressEvent] = []
    chain = [make_plugin("derain"), make_plugin("dehaze", seed=2)]
    result = executor_on(tiny_pipe, quality_check=True).run(photo, chain, progress=events.append)
    assert result.order == [0, 1] and len(result.checks) == 2
    assert [e.denoise_total for e in events if e.kind == "denoise" and e.denoise == 1] == [4, 2]
    assert len(clip_inputs) == 2 and all(np.array_equal(seen, pixels(photo)) for seen in clip_inputs)
