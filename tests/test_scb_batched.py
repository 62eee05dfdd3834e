"""The SCB's residuals for a whole schedule in batched calls: equal to the per-step path, chunked by memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plugins.diffplugin.pipeline import SCB_BATCH_BYTES, predict_noise, scb_batch_size, scb_residuals

#: Batched and per-step SCB calls differ only in how the kernels sum (seen: 1e-6 on residuals of size ~1).
RESIDUAL_TOL = 1e-5
#: After 20 UniPC steps and the VAE decode, in [0, 1] pixel units (seen: under 1e-6).
IMAGE_TOL = 1e-4


def schedule(pipe, steps: int = 20) -> torch.Tensor:
    pipe.scheduler.set_timesteps(steps)
    return pipe.scheduler.timesteps


def scb_calls(plugin) -> list[int]:
    """Counts the SCB's forward calls."""
    calls: list[int] = []
    plugin.scb.register_forward_pre_hook(lambda m, args: calls.append(1))
    return calls


@pytest.mark.parametrize("per_call", [20, 6, None])
def test_batched_residuals_equal_the_per_step_ones(tiny_pipe, make_plugin, per_call) -> None:
    scb, timesteps = make_plugin().scb, schedule(tiny_pipe)
    cond, prompt = torch.randn(1, 4, 8, 12), torch.randn(1, 64, 32)
    with torch.no_grad():
        per_step = [scb(cond, t, prompt, conditioning_scale=0.7).down_block_res_samples for t in timesteps]
        batched = list(scb_residuals(scb, cond, timesteps, prompt, 0.7, per_call))
    assert len(batched) == len(per_step) == 20
    for one, other in zip(per_step, batched, strict=True):
        assert [r.shape for r in one] == [r.shape for r in other] == [(1, 32, 8, 12)] * 3
        for a, b in zip(one, other, strict=True):
            torch.testing.assert_close(b, a, rtol=RESIDUAL_TOL, atol=RESIDUAL_TOL)
    assert not torch.allclose(per_step[0][1], per_step[-1][1])  # the residuals do depend on the timestep


def test_residuals_are_computed_one_chunk_at_a_time(tiny_pipe, make_plugin) -> None:
    plugin = make_plugin()
    calls = scb_calls(plugin)
    residuals = scb_residuals(plugin.scb, torch.randn(1, 4, 8, 8), schedule(tiny_pipe), torch.randn(1, 64, 32),
                              per_call=6)
    with torch.no_grad():
        next(residuals)
        assert len(calls) == 1
        rest = list(residuals)
    assert len(rest) == 19 and len(calls) == 4  # 6 + 6 + 6 + 2


def test_one_condition_with_many_timesteps_is_one_batch(make_plugin) -> None:
    scb = make_plugin().scb
    cond, prompt = torch.randn(1, 4, 8, 8), torch.randn(1, 64, 32)
    with torch.no_grad():
        out = scb(cond, torch.tensor([999, 500, 1]), prompt).down_block_res_samples
        training_batch = scb(cond.expand(3, -1, -1, -1), torch.tensor([999, 500, 1]),
                             prompt.expand(3, -1, -1)).down_block_res_samples
    assert [r.shape for r in out] == [(3, 32, 8, 8)] * 3
    for a, b in zip(out, training_batch, strict=True):
        torch.testing.assert_close(a, b, rtol=RESIDUAL_TOL, atol=RESIDUAL_TOL)
    with pytest.raises(ValueError, match="3 timesteps for a batch of 2 conditions"):
        scb(torch.randn(2, 4, 8, 8), torch.tensor([999, 500, 1]), torch.randn(2, 64, 32))


def test_precomputed_residuals_give_the_same_noise_prediction(tiny_pipe, make_plugin) -> None:
    scb, latents, cond = make_plugin().scb, torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    prompt, t = torch.randn(1, 64, 32), torch.tensor(500)
    with torch.no_grad():
        direct = predict_noise(tiny_pipe.unet, scb, latents, t, prompt, cond)
        residuals = next(scb_residuals(scb, cond, t[None], prompt))
        given = predict_noise(tiny_pipe.unet, scb, latents, t, prompt, cond, residuals=residuals)
    assert torch.equal(direct, given)


def run(pipe, photo, plugins, scb_batch, monkeypatch, **kwargs) -> np.ndarray:
    monkeypatch.setattr(pipe, "scb_batch", scb_batch)
    return pipe(photo, plugins, generator=torch.Generator().manual_seed(0), short_side=64, output_type="np",
                **kwargs).images


@pytest.mark.parametrize("chain_latents", [False, True])
def test_pipeline_batched_equals_the_per_step_path(tiny_pipe, make_plugin, photo, monkeypatch,
                                                   chain_latents) -> None:
    first, second = make_plugin("derain", seed=1), make_plugin("lowlight", seed=2)
    first_calls, second_calls = scb_calls(first), scb_calls(second)
    per_step = run(tiny_pipe, photo, [first, second], 1, monkeypatch, chain_latents=chain_latents)
    assert (len(first_calls), len(second_calls)) == (20, 3)
    batched = run(tiny_pipe, photo, [first, second], None, monkeypatch, chain_latents=chain_latents)
    assert (len(first_calls), len(second_calls)) == (21, 4)  # the whole tiny schedule fits one call
    chunked = run(tiny_pipe, photo, [first, second], 7, monkeypatch, chain_latents=chain_latents)
    assert (len(first_calls), len(second_calls)) == (24, 5)  # 7 + 7 + 6, then 3
    np.testing.assert_allclose(batched, per_step, rtol=0, atol=IMAGE_TOL)
    np.testing.assert_allclose(chunked, per_step, rtol=0, atol=IMAGE_TOL)


def test_batch_size_follows_the_memory_budget() -> None:
    sd_latent_256, sd_latent_512, sd_latent_1024 = (1, 4, 32, 32), (1, 4, 64, 64), (1, 4, 128, 128)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert scb_batch_size(sd_latent_512, 320, torch.float16, cuda) == 6
    assert scb_batch_size(sd_latent_1024, 320, torch.float16, cuda) == 1
    assert scb_batch_size(sd_latent_256, 320, torch.float32, cpu) == 3
    assert scb_batch_size(sd_latent_512, 320, torch.float32, cpu) == 1  # the per-step path
    assert scb_batch_size((1, 4, 8, 12), 32, torch.float32, cpu) == 341  # tiny: a whole schedule in one call
    assert scb_batch_size(sd_latent_512, 320, torch.float16, cuda, budget_bytes=4 * SCB_BATCH_BYTES) == 25
