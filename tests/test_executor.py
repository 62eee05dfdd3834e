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

from assistant.executor import Cancelled, DiffusionSettings, Executor, ExecutorError, OutOfMemory
from plugins.progress import ProgressEvent
from registry.errors import CannotHelp
from registry.manifest import PluginManifest
from registry.runtime import PythonPlugin
from tests.conftest import photo_array

#: Small enough that the tiny base (VAE factor 2) runs in well under a second per plugin.
SMALL = {"judge": False, "short_side": 32, "steps": 4, "chain_steps": 2}


def executor_on(pipe, **settings) -> Executor:
    return Executor(DiffusionSettings(**{**SMALL, **settings}), pipe=pipe)


def code_plugin(task: str, function, python: str = '{entry_point: "x:y"}') -> PythonPlugin:
    manifest = PluginManifest.model_validate(yaml.safe_load(f"""
schema_version: "1.0"
id: test/{task}
version: 1.0.0
name: {task}
description: A test plugin.
tasks: [{task}]
examples: [do {task}, please {task} it, {task} the photo]
kind: python
python: {python}
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


def glow(image: PIL.Image.Image) -> PIL.Image.Image:
    """A x1.8 blow-out: 16% of the photo clips to white in full; acceptable at half strength."""
    return image.convert("RGB").point(lambda v: min(255, round(v * 1.8)))


@pytest.fixture
def sharp() -> PIL.Image.Image:
    """chelsea at 320 px: enough detail that a blur is plainly a loss."""
    return PIL.Image.fromarray(photo_array("chelsea", 320))


def test_the_judge_drops_a_step_that_only_harms_and_says_so(sharp) -> None:
    large = sharp
    steps = [code_plugin("soften", blur), code_plugin("warm", warmer)]
    result = Executor().run(large, steps)  # judged by default
    assert result.order == [1] and result.skipped == [0]
    dropped = result.outcomes[0]
    assert dropped.plugin is None and [(t.mix, t.verdict) for t in dropped.tries] == [(1.0, "worse"), (0.5, "worse"),
                                                                                      (0.25, "worse")]
    assert "sharpness fell" in dropped.tries[0].reasons[0]
    assert result.notes[0].startswith("soften skipped: every try made the photo worse (test/soften: worse")
    assert np.array_equal(pixels(result.image), pixels(warmer(large)))
    unjudged = Executor(DiffusionSettings(judge=False)).run(large, steps)
    assert unjudged.order == [0, 1] and not unjudged.outcomes
    assert np.array_equal(pixels(unjudged.image), pixels(warmer(blur(large))))


def test_a_step_too_strong_in_full_is_kept_milder(sharp) -> None:
    large = sharp
    result = Executor().run(large, [code_plugin("glow", glow)])
    assert [(t.mix, t.verdict) for t in result.outcomes[0].tries] == [(1.0, "worse"), (0.5, "kept")]
    assert "clipped fraction rose" in result.outcomes[0].tries[0].reasons[0]
    assert result.notes == ["glow: kept test/glow at 50% (test/glow: worse; test/glow at 50%: kept)"]
    assert np.array_equal(pixels(result.image), pixels(PIL.Image.blend(large, glow(large), 0.5)))
    replayed = Executor(DiffusionSettings(judge=False)).run(large, [code_plugin("glow", glow)], mixes=[0.5])
    assert np.array_equal(pixels(replayed.image), pixels(result.image))  # a saved mix replays as it ran


def test_other_plugins_for_the_task_are_tried_and_the_best_is_kept(sharp) -> None:
    from assistant.executor import Alternative
    from plugins.builtin.dehaze import dehaze
    from plugins.data.degradations import degrade

    hazy = degrade(sharp, ["haze"], seed=1)
    harmful = code_plugin("dehaze", blur)
    gentle, full = code_plugin("dehaze", lambda im: dehaze(im, strength=0.3)), code_plugin("dehaze", dehaze)
    offered = {"acme/gentle": gentle, "acme/full": full}

    def alternatives(index: int) -> list[Alternative]:
        return [Alternative(name, lambda plugin=plugin: plugin) for name, plugin in offered.items()]

    first_fine = Executor().run(hazy, [harmful], names=["acme/blur"], alternatives=alternatives)
    tried = [(t.plugin, t.verdict) for t in first_fine.outcomes[0].tries]
    assert tried[:3] == [("acme/blur", "worse")] * 3 and tried[3][0] == "acme/gentle"
    assert first_fine.outcomes[0].plugin == "acme/gentle" and len({t.plugin for t in first_fine.outcomes[0].tries}) == 2
    best_of_all = Executor(DiffusionSettings(explore=3)).run(hazy, [harmful], names=["acme/blur"],
                                                            alternatives=alternatives)
    tries = [t for t in best_of_all.outcomes[0].tries if t.verdict in ("kept", "ok")]
    assert {t.plugin for t in tries} == {"acme/gentle", "acme/full"}
    kept = next(t for t in tries if t.verdict == "kept")
    assert kept.better == max(t.better for t in tries)


def test_a_preset_is_tried_before_a_milder_mix_and_a_kept_one_replays(sharp) -> None:
    from assistant.planning import _as_ran
    from assistant.planning.plan import Plan, Step

    def soften(image: PIL.Image.Image, radius: float = 4.0, warm: bool = False) -> PIL.Image.Image:
        return warmer(image) if warm else image.filter(PIL.ImageFilter.GaussianBlur(radius))

    presets = "{entry_point: 'x:y', options: {radius: 4.0, warm: false}, presets: {same: {radius: 4.0}, " \
              "gentle: {warm: true}, unused: {radius: 0.5}}}"
    plugin = code_plugin("soften", soften, presets)
    result = Executor().run(sharp, [plugin], [{"radius": 4.0}])
    tries = [(t.preset, t.mix, t.verdict) for t in result.outcomes[0].tries]
    # In order, skipping `same` (it is what just ran), and no further once one is kept.
    assert tries == [(None, 1.0, "worse"), ("gentle", 1.0, "kept")]
    assert result.outcomes[0].overrides == {"warm": True}
    assert np.array_equal(pixels(result.image), pixels(warmer(sharp)))
    assert result.notes == ["soften: kept test/soften [gentle] (test/soften: worse; test/soften [gentle]: kept)"]
    plan = Plan(steps=[Step(plugin="test/soften", task="soften", params={"radius": 4.0})])
    [ran] = _as_ran(plan, result.outcomes, registry=None)  # the same plugin: no registry lookup
    assert ran.params == {"radius": 4.0, "warm": True} and ran.tries[1].preset == "gentle"
    halfway = Executor().run(sharp, [plugin], [{}], mixes=[0.5])  # a preset runs at the step's mix
    assert [(t.preset, t.mix) for t in halfway.outcomes[0].tries] == [(None, 0.5), ("gentle", 0.5)]
    assert np.array_equal(pixels(halfway.image), pixels(PIL.Image.blend(sharp, warmer(sharp), 0.5)))
    replayed = Executor(DiffusionSettings(judge=False)).run(sharp, [plugin], [ran.params])
    assert np.array_equal(pixels(replayed.image), pixels(result.image))
    without = Executor().run(sharp, [code_plugin("soften", soften)], [{"radius": 4.0}])  # no presets: milder mixes
    assert [(t.preset, t.mix) for t in without.outcomes[0].tries] == [(None, 1.0), (None, 0.5), (None, 0.25)]


@pytest.mark.parametrize("judge", [False, True])
def test_a_plugin_that_cannot_help_leaves_the_photo_as_it_was_and_says_why(photo, judge: bool) -> None:
    def refuses(image: PIL.Image.Image) -> PIL.Image.Image:
        raise CannotHelp("no streaks in this photo")

    steps = [code_plugin("derain", refuses), code_plugin("warm", warmer)]
    result = Executor(DiffusionSettings(judge=judge)).run(photo, steps)
    assert np.array_equal(pixels(result.image), pixels(warmer(photo)))  # the next step ran on the untouched photo
    assert result.notes[0] == "derain skipped: test/derain left the photo as it was (no streaks in this photo)"


def test_a_step_that_changes_nothing_is_not_called_worse(photo) -> None:
    """A plugin that returns its input unchanged is reported as having left the photo as it was: the judge's
    chance for a no-op (which may be under 50%) would otherwise read as "every try made the photo worse"."""
    result = Executor().run(photo, [code_plugin("demoire", lambda image: image.copy()), code_plugin("warm", warmer)])
    assert [(t.verdict, t.reasons) for t in result.outcomes[0].tries] == [("cannot help", ["it changed nothing"])]
    assert result.notes[0] == "demoire skipped: test/demoire left the photo as it was (it changed nothing)"
    assert result.order == [1] and np.array_equal(pixels(result.image), pixels(warmer(photo)))


def test_the_judge_keeps_harmless_steps_quietly(photo) -> None:
    large = photo.resize((320, 212))
    def no_alternatives_needed(index: int) -> list:
        raise AssertionError("the registry was asked for alternatives although the first plugin was fine")

    result = Executor().run(large, [code_plugin("warm", warmer)] * 2, alternatives=no_alternatives_needed)
    assert result.order == [0, 1] and not result.notes
    assert [t.verdict for o in result.outcomes for t in o.tries] == ["kept", "kept"]


@pytest.mark.parametrize("size", [(1, 1), (5, 3)])
def test_a_photo_the_judge_cannot_measure_keeps_its_steps_with_a_note(size: tuple[int, int]) -> None:
    tiny = PIL.Image.new("RGB", size, (120, 80, 40))
    result = Executor().run(tiny, [code_plugin("warm", warmer)])
    assert result.order == [0] and np.array_equal(pixels(result.image), pixels(warmer(tiny)))
    assert result.notes == ["warm: the judge could not measure this photo, so the step was kept unjudged"]


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
    import assistant.judge as judge

    monkeypatch.setattr(judge, "assess", lambda before, after, task: judge.Assessment(False, 0.9, []))
    clip_inputs: list[np.ndarray] = []
    real = tiny_pipe.encode_clip_tokens
    monkeypatch.setattr(tiny_pipe, "encode_clip_tokens", lambda image: clip_inputs.append(pixels(image)) or real(image))
    events: list[ProgressEvent] = []
    chain = [make_plugin("derain"), make_plugin("dehaze", seed=2)]
    result = executor_on(tiny_pipe, judge=True).run(photo, chain, progress=events.append)
    assert result.order == [0, 1] and len(result.outcomes) == 2
    assert [e.denoise_total for e in events if e.kind == "denoise" and e.denoise == 1] == [4, 2]
    assert len(clip_inputs) == 2 and all(np.array_equal(seen, pixels(photo)) for seen in clip_inputs)
