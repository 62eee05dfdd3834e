"""`models pull`: a clear failure without network; everything after the download works on local folders."""

from __future__ import annotations

import socket

import pytest
import torch

from plugins.diffplugin.errors import PullError
from plugins.diffplugin.pipeline import DiffPluginPipeline
from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.pull import OFFICIAL_URL, download_official, pull
from plugins.diffplugin.selector import SelectorHeads
from tests.official_format import randomize, write_official_selector, write_official_task


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_offline_base_model_fails_with_instructions(tmp_path, no_network) -> None:
    with pytest.raises(PullError) as info:
        pull(tmp_path / "models", official=None)
    message = str(info.value)
    assert "CompVis/stable-diffusion-v1-4" in message and "--base DIR" in message
    assert not (tmp_path / "models" / "base").exists()


def test_offline_plugin_download_fails_with_instructions(tmp_path, no_network) -> None:
    with pytest.raises(PullError, match=r"(?s)could not download .*derain/scb/config\.json.*--official DIR"):
        download_official(OFFICIAL_URL, ["derain"], tmp_path)


def test_pull_from_local_folders_gives_a_ready_models_folder(tmp_path, tiny_base_dir, tiny_pipe, photo) -> None:
    clone = tmp_path / "Diff-Plugin"  # laid out like a clone of the official repository
    for seed, task in enumerate(("derain", "lowlight")):
        plugin = TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, task)
        randomize(plugin.scb, seed)
        randomize(plugin.tpb, seed + 10)
        write_official_task(clone / "pre-trained" / task, plugin, module_prefix=seed == 1)
    write_official_selector(clone / "pre-trained", randomize(SelectorHeads(embed_dim=32), 3))

    result = pull(tmp_path / "models", base=str(tiny_base_dir), official=str(clone), tasks=["derain", "lowlight"])

    assert [(i.kind, i.name) for i in result.plugins] == [("plugin", "derain"), ("plugin", "lowlight"),
                                                          ("selector", "plugin_selector")]
    pipe = DiffPluginPipeline.from_base(tmp_path / "models" / "base", device="cpu")
    pipe.set_progress_bar_config(disable=True)
    plugins = [TaskPlugin.from_pretrained(tmp_path / "models" / "plugins" / t) for t in ("derain", "lowlight")]
    out = pipe(photo, plugins, num_inference_steps=2, short_side=32, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == photo.size


def test_unknown_task_is_named(tmp_path) -> None:
    with pytest.raises(PullError, match=r"unknown task.*derainn"):
        pull(tmp_path, base=None, tasks=["derainn"])


def test_a_second_pull_keeps_what_is_there(tmp_path, tiny_base_dir, tiny_pipe) -> None:
    clone = tmp_path / "pre-trained"
    write_official_task(clone / "derain", TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "derain"))
    first = pull(tmp_path / "models", base=str(tiny_base_dir), official=str(clone), tasks=["derain"])
    marker = tmp_path / "models" / "plugins" / "derain" / "note.txt"
    marker.write_text("still here")
    again = pull(tmp_path / "models", base=str(tiny_base_dir), official=str(clone), tasks=["derain"])
    assert first.plugins and not again.plugins
    assert again.kept == [str(tmp_path / "models" / "base"), str(tmp_path / "models" / "plugins" / "derain")]
    assert marker.read_text() == "still here"
    forced = pull(tmp_path / "models", base=None, official=str(clone), tasks=["derain"], overwrite=True)
    assert [i.name for i in forced.plugins] == ["derain"] and not marker.exists()


def test_a_mistyped_official_folder_is_named_before_any_work(tmp_path) -> None:
    with pytest.raises(PullError, match="neither an existing folder nor an http"):
        pull(tmp_path / "models", official="./Diff-Plugin-typo")
    assert not (tmp_path / "models").exists()
