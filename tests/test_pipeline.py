"""DiffPluginPipeline on the tiny base: official inference semantics (spec §6), end to end on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from plugins.diffplugin.pipeline import predict_noise


def run(pipe, photo, plugins, seed=0, **kwargs):
    return pipe(photo, plugins, generator=torch.Generator().manual_seed(seed), short_side=64, **kwargs)


def test_end_to_end_is_deterministic_and_keeps_the_photo_size(tiny_pipe, make_plugin, photo) -> None:
    plugin = make_plugin()
    first = np.asarray(run(tiny_pipe, photo, plugin).images[0])
    again = np.asarray(run(tiny_pipe, photo, plugin).images[0])
    other = np.asarray(run(tiny_pipe, photo, plugin, seed=1).images[0])
    assert first.shape == (photo.height, photo.width, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert tiny_pipe.unet.dtype == torch.float32  # fp32 on CPU


def test_processed_size_upscales_short_side_and_floors_to_vae_multiple(tiny_pipe, make_plugin, photo) -> None:
    assert tiny_pipe.target_size(80, 53, 64, "min") == (96, 64)
    assert tiny_pipe.target_size(801, 600, 512, "min") == (800, 600)  # never downscaled in 'min' mode
    assert tiny_pipe.target_size(800, 600, 512, "exact") == (682, 512)
    out = run(tiny_pipe, photo, make_plugin(), output_size="processed", output_type="np").images
    assert out.shape == (1, 64, 96, 3)


def test_untrained_plugin_leaves_the_unet_output_unchanged(tiny_pipe, make_plugin) -> None:
    plugin = make_plugin(trained_like=False)
    latents, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    prompt = plugin.tpb(torch.randn(1, 64, 32))
    t = torch.tensor(500)
    with torch.no_grad():
        with_plugin = predict_noise(tiny_pipe.unet, plugin.scb, latents, t, prompt, cond)
        bare = tiny_pipe.unet(latents, t, encoder_hidden_states=prompt).sample
        trained = predict_noise(tiny_pipe.unet, make_plugin().scb, latents, t, prompt, cond)
    assert torch.equal(with_plugin, bare)
    assert not torch.allclose(trained, bare)


class Recorder:
    """Records what the SCB receives at every call (one call may batch several timesteps) and what the UNet
    receives at every denoising step."""

    def __init__(self, pipe, plugin) -> None:
        self.cond: list[torch.Tensor] = []
        self.timesteps: list[int] = []
        self.unet_latents: list[torch.Tensor] = []
        self.handles = [
            plugin.scb.register_forward_pre_hook(self._scb_call),
            pipe.unet.register_forward_pre_hook(lambda m, args: self.unet_latents.append(args[0].clone())),
        ]

    def _scb_call(self, module, args) -> None:
        self.cond.append(args[0].clone())
        self.timesteps += torch.as_tensor(args[1]).flatten().tolist()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()


def test_scb_sees_only_the_degraded_latent_never_the_noisy_one(tiny_pipe, make_plugin, photo) -> None:
    plugin = make_plugin()
    with Recorder(tiny_pipe, plugin) as seen:
        run(tiny_pipe, photo, plugin, num_inference_steps=5)
    processed = tiny_pipe.image_processor.preprocess(photo, height=64, width=96)
    expected = tiny_pipe.encode_condition(processed)
    assert len(seen.timesteps) == 5
    assert all(torch.allclose(c, expected, atol=1e-5) for c in seen.cond)
    assert not torch.allclose(seen.unet_latents[0], seen.unet_latents[-1])


@pytest.mark.parametrize("task", ["derain", "lowlight"])
def test_start_latent_follows_the_plugins_start_mode(tiny_pipe, make_plugin, photo, task) -> None:
    plugin = make_plugin(task)
    with Recorder(tiny_pipe, plugin) as seen:
        run(tiny_pipe, photo, plugin, seed=7)
    noise = randn_tensor(seen.cond[0].shape, generator=torch.Generator().manual_seed(7))
    if task == "lowlight":  # pure noise: the photo does not enter the start latent
        expected = noise
    else:  # the noised degraded latent at t=999
        tiny_pipe.scheduler.set_timesteps(20)
        expected = tiny_pipe.scheduler.add_noise(seen.cond[0], noise, torch.tensor([999]))
    assert torch.allclose(seen.unet_latents[0], expected, atol=1e-5)


@pytest.mark.parametrize(("steps", "overwrites"), [(20, 1), (50, 2)])
def test_noised_input_is_written_at_every_timestep_over_the_threshold(tiny_pipe, make_plugin, photo, monkeypatch,
                                                                      steps, overwrites) -> None:
    calls = []
    original = tiny_pipe.scheduler.add_noise
    monkeypatch.setattr(tiny_pipe.scheduler, "add_noise", lambda *a: calls.append(int(a[2])) or original(*a))
    run(tiny_pipe, photo, make_plugin(), num_inference_steps=steps)
    assert len(calls) == overwrites and all(t >= 960 for t in calls)


def test_chain_runs_later_plugins_with_few_steps_on_the_previous_output(tiny_pipe, make_plugin, photo) -> None:
    first, second = make_plugin("derain", seed=1), make_plugin("dehaze", seed=2)
    clip_calls = []
    handle = tiny_pipe.image_encoder.register_forward_hook(lambda *a: clip_calls.append(1))
    try:
        with Recorder(tiny_pipe, first) as seen_first, Recorder(tiny_pipe, second) as seen_second:
            chained = run(tiny_pipe, photo, [first, second], output_type="np").images
    finally:
        handle.remove()
    assert len(seen_first.timesteps) == 20 and len(seen_second.timesteps) == 3
    assert len(clip_calls) == 1  # CLIP tokens of the original photo serve the whole chain
    assert not torch.allclose(seen_first.cond[0], seen_second.cond[0])  # second plugin sees the first's output
    single = run(tiny_pipe, photo, first, output_type="np").images
    assert not np.allclose(chained, single)
    with Recorder(tiny_pipe, second) as seen:
        run(tiny_pipe, photo, [first, second], chain_num_inference_steps=5)
    assert len(seen.timesteps) == 5


def test_bad_inputs_are_named(tiny_pipe, make_plugin, photo) -> None:
    from plugins.diffplugin.plugin import PluginSettings, TaskPlugin
    from plugins.diffplugin.scb import SCBNet
    from plugins.diffplugin.tpb import TPBNet

    with pytest.raises(ValueError, match="plugins is empty"):
        run(tiny_pipe, photo, [])
    with pytest.raises(TypeError, match="PIL image"):
        run(tiny_pipe, "photo.jpg", make_plugin())
    full_size = TaskPlugin(TPBNet(), SCBNet(), PluginSettings(task="derain"))
    with pytest.raises(ValueError, match="does not fit this base model: TPB expects 1024-d CLIP tokens"):
        run(tiny_pipe, photo, full_size)
    with pytest.raises(ValueError, match="resize_mode must be 'min' or 'exact'"):
        run(tiny_pipe, photo, make_plugin(), resize_mode="shortest")
    with pytest.raises(ValueError, match="chain_num_inference_steps"):
        run(tiny_pipe, photo, make_plugin(), chain_num_inference_steps=0)


def test_step_end_callback_follows_the_diffusers_contract(tiny_pipe, make_plugin, photo) -> None:
    events = []

    def on_step_end(pipe, step, timestep, tensors):
        events.append((pipe.plugin_index, step, pipe.num_timesteps, sorted(tensors), timestep.ndim))
        return tensors

    run(tiny_pipe, photo, [make_plugin(), make_plugin("dehaze")], num_inference_steps=4,
        callback_on_step_end=on_step_end)
    assert events == [(0, i, 4, ["latents"], 0) for i in range(4)] + [(1, i, 3, ["latents"], 0) for i in range(3)]


def test_interrupt_stops_after_the_step_that_set_it(tiny_pipe, make_plugin, photo) -> None:
    steps = []

    def stop_at_step_1(pipe, step, timestep, tensors):
        steps.append((pipe.plugin_index, step))
        if step == 1:
            pipe._interrupt = True
        return tensors

    out = run(tiny_pipe, photo, [make_plugin(), make_plugin("dehaze")], num_inference_steps=4,
              callback_on_step_end=stop_at_step_1).images[0]
    assert steps == [(0, 0), (0, 1)]  # no later step, no later plugin
    assert out.size == photo.size  # still decoded and returned
    steps.clear()
    run(tiny_pipe, photo, make_plugin(), num_inference_steps=3, callback_on_step_end=lambda p, i, t, k: k)
    assert not tiny_pipe.interrupt  # the next call starts afresh


def test_step_end_callback_can_replace_the_latents(tiny_pipe, make_plugin, photo) -> None:
    plugin = make_plugin()
    plain = run(tiny_pipe, photo, plugin, num_inference_steps=3, output_type="np").images
    same = run(tiny_pipe, photo, plugin, num_inference_steps=3, output_type="np",
               callback_on_step_end=lambda pipe, i, t, tensors: {"latents": tensors["latents"].clone()}).images
    shifted = run(tiny_pipe, photo, plugin, num_inference_steps=3, output_type="np",
                  callback_on_step_end=lambda pipe, i, t, tensors: {"latents": tensors["latents"] + 1.0}).images
    np.testing.assert_array_equal(plain, same)
    assert np.abs(plain - shifted).mean() > 0.01


def test_unknown_step_end_tensor_inputs_are_refused(tiny_pipe, make_plugin, photo) -> None:
    with pytest.raises(ValueError, match=r"must be among \['latents'\], got \['prompt_embeds'\]"):
        run(tiny_pipe, photo, make_plugin(), callback_on_step_end=lambda p, i, t, k: k,
            callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])


def test_diffusers_pipeline_callback_objects_are_taken(tiny_pipe, make_plugin, photo) -> None:
    """A `PipelineCallback` as diffusers' official ones are written: the cutoff step from `pipeline.num_timesteps`."""
    from diffusers.callbacks import PipelineCallback

    steps = []

    class StopHalfway(PipelineCallback):
        tensor_inputs = ("latents",)

        def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
            steps.append(step_index)
            pipeline._interrupt = step_index == int(pipeline.num_timesteps * self.config.cutoff_step_ratio)
            return callback_kwargs

    run(tiny_pipe, photo, make_plugin(), num_inference_steps=4, callback_on_step_end=StopHalfway(cutoff_step_ratio=0.5))
    assert steps == [0, 1, 2]


def test_residuals_reach_only_the_last_up_block(tiny_pipe, make_plugin) -> None:
    """SCB residuals go to skips 0-2, which only the decoder's last (full-resolution) up block reads."""
    latents, cond = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    prompt, t = torch.randn(1, 64, 32), torch.tensor(500)
    outputs: list[list[torch.Tensor]] = []

    def run_with(scb) -> None:
        seen: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda m, a, out: seen.append(out.clone())) for b in tiny_pipe.unet.up_blocks]
        with torch.no_grad():
            predict_noise(tiny_pipe.unet, scb, latents, t, prompt, cond)
        for hook in hooks:
            hook.remove()
        outputs.append(seen)

    run_with(make_plugin(trained_like=False).scb)
    run_with(make_plugin(trained_like=True).scb)
    untrained, trained = outputs
    assert all(torch.equal(a, b) for a, b in zip(untrained[:-1], trained[:-1], strict=True))
    assert not torch.allclose(untrained[-1], trained[-1])


def test_noised_start_latent_has_the_sd_schedule_weights(tiny_pipe) -> None:
    """At t=999 the start latent is sqrt(alpha_bar)*z + sqrt(1-alpha_bar)*eps = 0.0683 z + 0.9977 eps (spec §6)."""
    tiny_pipe.scheduler.set_timesteps(20)
    assert tiny_pipe.scheduler.timesteps[:3].tolist() == [999, 949, 899]
    z, eps = torch.ones(1, 4, 2, 2), torch.zeros(1, 4, 2, 2)
    assert tiny_pipe.scheduler.add_noise(z, eps, torch.tensor([999])).flatten()[0].item() == pytest.approx(0.0683,
                                                                                                         abs=1e-4)
    assert tiny_pipe.scheduler.add_noise(eps, z, torch.tensor([999])).flatten()[0].item() == pytest.approx(0.9977,
                                                                                                         abs=1e-4)
    tiny_pipe.scheduler.set_timesteps(3)
    assert tiny_pipe.scheduler.timesteps.tolist() == [999, 666, 333]


def test_half_precision_unet_with_an_fp32_vae(tiny_base_dir, make_plugin, photo) -> None:
    from plugins.diffplugin.pipeline import DiffPluginPipeline

    pipe = DiffPluginPipeline.from_base(tiny_base_dir, device="cpu", dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    pipe.vae.to(torch.float32)
    out = run(pipe, photo, [make_plugin(), make_plugin("lowlight")], num_inference_steps=2, output_type="np")
    assert np.isfinite(out.images).all() and out.images.shape == (1, photo.height, photo.width, 3)
