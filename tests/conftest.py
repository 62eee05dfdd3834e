"""Shared fixtures: a tiny random base model saved to disk and loaded back through `from_pretrained`."""

from __future__ import annotations

import os

# Before any Hugging Face import: never reach for the network in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# One compute thread per process, set before numpy and torch load (and inherited by the processes tests start):
# on a busy 2-core machine two torch threads stall each other, and a test's speed must not depend on the load.
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

torch.set_num_threads(1)
torch.set_num_interop_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's real data folder."""
    monkeypatch.setenv("DIFFPLUGIN_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def tiny_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from plugins.diffplugin.tiny import make_tiny_base

    path = tmp_path_factory.mktemp("tiny-base")
    make_tiny_base(path, seed=0)
    return path


@pytest.fixture(scope="session")
def tiny_pipe(tiny_base_dir: Path):
    from plugins.diffplugin.pipeline import DiffPluginPipeline

    pipe = DiffPluginPipeline.from_base(tiny_base_dir, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def make_plugin(tiny_pipe):
    """Factory for tiny plugins; `trained_like=True` gives the zero convs random weights so the SCB acts."""
    import torch

    from plugins.diffplugin.plugin import TaskPlugin

    def factory(task: str = "derain", seed: int = 1, trained_like: bool = True) -> TaskPlugin:
        plugin = TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, task, seed=seed)
        if trained_like:
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for conv in plugin.scb.controlnet_down_blocks:
                    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.2)
        return plugin

    return factory


def photo_array(name: str = "astronaut", width: int = 80) -> np.ndarray:
    """A real photo from scikit-image, scaled to `width` px wide (RGB uint8)."""
    import skimage.data

    image = PIL.Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    height = round(image.height * width / image.width)
    return np.asarray(image.resize((width, height), PIL.Image.BICUBIC))


@pytest.fixture
def photo() -> PIL.Image.Image:
    """A 80x53 crop-free downscale of skimage's chelsea (non-square on purpose)."""
    return PIL.Image.fromarray(photo_array("chelsea", 80))
