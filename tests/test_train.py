"""Training a tiny plugin: the loss falls, checkpoints resume exactly, accumulation updates both branches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DDPMScheduler
from torch.utils.data import DataLoader

from plugins.data.pairs import make_paired_dataset
from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.train import PairedImageDataset, TrainConfig, evaluate_loss, train_plugin
from plugins.progress import ProgressEvent
from tests.conftest import photo_array


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """accelerate keeps one process-wide state; reset it between runs as accelerate's own test case does."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="module")
def rain_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    clean = tmp_path_factory.mktemp("clean")
    for name in ("astronaut", "chelsea"):
        PIL.Image.fromarray(photo_array(name, 64)).save(clean / f"{name}.png")
    return make_paired_dataset(clean, tmp_path_factory.mktemp("data") / "rain", ["rain"], seed=0)


def config(rain_pairs: Path, output: Path, **overrides) -> TrainConfig:
    settings = dict(data=rain_pairs, task="derain", output_dir=output, resolution=32, train_batch_size=2,
                    learning_rate=1e-3, scale_lr=False, max_train_steps=40, checkpointing_steps=1000,
                    validation_steps=1000, num_validation_images=0)
    return TrainConfig(**{**settings, **overrides})


def same_weights(a: TaskPlugin, b: TaskPlugin) -> bool:
    pairs = [(m.state_dict(), n.state_dict()) for m, n in ((a.tpb, b.tpb), (a.scb, b.scb))]
    return all(torch.equal(x[k], y[k]) for x, y in pairs for k in x)


def test_loss_falls_clearly_on_a_fixed_batch(tiny_pipe, rain_pairs, tmp_path) -> None:
    from plugins.data.pairs import read_pairs

    batch = next(iter(DataLoader(PairedImageDataset(read_pairs(rain_pairs), 32, tiny_pipe.feature_extractor),
                                 batch_size=2)))
    scheduler = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    fresh = TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "derain", seed=0)
    before = evaluate_loss(tiny_pipe, fresh, batch, scheduler)

    events: list[ProgressEvent] = []
    result = train_plugin(config(rain_pairs, tmp_path, validation_steps=20, num_validation_images=1),
                          pipe=tiny_pipe, progress=events.append)

    after = evaluate_loss(tiny_pipe, TaskPlugin.from_pretrained(result.plugin), batch, scheduler)
    assert result.global_step == 40
    assert after < 0.92 * before, (before, after)
    assert result.validation_losses[40] < result.validation_losses[20] < before
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 41))
    assert [(e.kind, e.done, e.total) for e in events] == [("train", step, 40) for step in range(41)]
    assert [e.loss for e in events[1:]] == [r["loss"] for r in log]
    strips = sorted((tmp_path / "validation").glob("*.png"))
    assert [p.name for p in strips] == ["step-0000020_0.png", "step-0000040_0.png"]
    assert PIL.Image.open(strips[0]).size == (96, 32)  # degraded | output | clean


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tiny_pipe, rain_pairs, tmp_path) -> None:
    common = dict(train_batch_size=1, max_train_steps=7, checkpointing_steps=3, checkpoints_total_limit=2)
    straight = train_plugin(config(rain_pairs, tmp_path / "a", **common), pipe=tiny_pipe)
    first = train_plugin(config(rain_pairs, tmp_path / "b", **{**common, "max_train_steps": 3}), pipe=tiny_pipe)
    interrupted = TaskPlugin.from_pretrained(first.plugin)
    events: list[ProgressEvent] = []
    resumed = train_plugin(config(rain_pairs, tmp_path / "b", resume_from_checkpoint="latest", **common),
                           pipe=tiny_pipe, progress=events.append)

    assert resumed.global_step == 7
    assert [e.done for e in events] == [3, 4, 5, 6, 7]  # the bar picks up where the checkpoint left off
    assert same_weights(TaskPlugin.from_pretrained(straight.plugin), TaskPlugin.from_pretrained(resumed.plugin))
    assert not same_weights(interrupted, TaskPlugin.from_pretrained(resumed.plugin))
    # checkpoints at 3, 6 and the last step, of which the newest two are kept
    assert sorted(p.name for p in (tmp_path / "a").glob("checkpoint-*")) == ["checkpoint-6", "checkpoint-7"]


def test_gradient_accumulation_updates_both_branches(tiny_pipe, rain_pairs, tmp_path) -> None:
    fresh = TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "derain", seed=3)
    fresh.save_pretrained(tmp_path / "init")
    result = train_plugin(config(rain_pairs, tmp_path / "out", train_batch_size=1, gradient_accumulation_steps=2,
                                 max_train_steps=2, init_plugin=tmp_path / "init"), pipe=tiny_pipe)
    trained = TaskPlugin.from_pretrained(result.plugin)
    assert result.global_step == 2
    for name in ("tpb", "scb"):
        before, after = getattr(fresh, name).state_dict(), getattr(trained, name).state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), name
    zero_conv = trained.scb.controlnet_down_blocks[0].weight
    assert torch.count_nonzero(zero_conv) > 0  # the zero-initialised outputs learn too


def test_bad_training_data_is_reported(tiny_pipe, tmp_path) -> None:
    bad = tmp_path / "pairs.csv"
    bad.write_text("clean,degraded\na.png,b.png\n")
    with pytest.raises(ValueError, match="conditioning_image"):
        train_plugin(config(bad, tmp_path / "out"), pipe=tiny_pipe)


def test_bf16_mixed_precision_trains_and_keeps_fp32_weights(tiny_base_dir, rain_pairs, tmp_path) -> None:
    from plugins.diffplugin.pipeline import DiffPluginPipeline

    pipe = DiffPluginPipeline.from_base(tiny_base_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    result = train_plugin(config(rain_pairs, tmp_path, max_train_steps=3, mixed_precision="bf16",
                                 gradient_accumulation_steps=2, validation_steps=3, num_validation_images=1),
                          pipe=pipe)
    assert result.global_step == 3 and np.isfinite(result.last_loss) and np.isfinite(result.validation_losses[3])
    trained = TaskPlugin.from_pretrained(result.plugin)
    assert trained.scb.dtype == torch.float32 and trained.tpb.dtype == torch.float32


def test_a_new_run_refuses_an_output_folder_that_holds_another_run(tiny_pipe, rain_pairs, tmp_path) -> None:
    train_plugin(config(rain_pairs, tmp_path, max_train_steps=1), pipe=tiny_pipe)
    with pytest.raises(FileExistsError, match="--resume latest"):
        train_plugin(config(rain_pairs, tmp_path, max_train_steps=2), pipe=tiny_pipe)
    resumed = train_plugin(config(rain_pairs, tmp_path, max_train_steps=2, resume_from_checkpoint="latest"),
                           pipe=tiny_pipe)
    assert resumed.global_step == 2
