"""`models pull`: a clear failure without network; everything after the download works on local folders."""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from plugins.diffplugin.errors import PullError
from plugins.diffplugin.layout import SELECTOR_TEXT_FOLDER
from plugins.diffplugin.pipeline import DiffPluginPipeline
from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.pull import OFFICIAL_URL, download_official, pull
from plugins.diffplugin.selector import PaperSelector, SelectorHeads
from plugins.diffplugin.tiny import make_tiny_text_encoder
from plugins.progress import ProgressEvent
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



RELEASE_FILES = ("derain/scb/config.json", "derain/scb/diffusion_pytorch_model.bin", "derain/tpb.pt",
                 "plugin_selector/PromptTunner.pt")


def fake_release(folder: Path) -> Path:
    """A folder laid out like the official release, each file ten bytes."""
    for name in RELEASE_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x" * 10)
    return folder


def test_downloads_report_progress_per_file(tmp_path) -> None:
    release = fake_release(tmp_path / "release")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(release))
    events: list[ProgressEvent] = []
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            download_official(f"http://127.0.0.1:{server.server_port}", ["derain"], tmp_path / "out",
                              progress=events.append)
        finally:
            server.shutdown()
    assert [(e.kind, e.what, e.done, e.total) for e in events] == [
        ("download", name, 10, 10) for name in RELEASE_FILES]


def test_downloads_from_a_file_url(tmp_path) -> None:
    release = fake_release(tmp_path / "release")
    events: list[ProgressEvent] = []
    download_official(release.as_uri(), ["derain"], tmp_path / "out", progress=events.append)
    assert all((tmp_path / "out" / name).read_bytes() == b"x" * 10 for name in RELEASE_FILES)
    assert [(e.what, e.done, e.total) for e in events] == [(name, 10, 10) for name in RELEASE_FILES]

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
    # The tiny base has no text encoder: paper mode's folder is skipped with a note, nothing fails.
    assert result.selector_text is None and not (tmp_path / "models" / SELECTOR_TEXT_FOLDER).exists()
    assert len(result.notes) == 1 and "no text_encoder/" in result.notes[0] and SELECTOR_TEXT_FOLDER in result.notes[0]


@pytest.fixture
def base_with_text_encoder(tmp_path: Path, tiny_base_dir: Path) -> Path:
    """The tiny base plus text_encoder/ and tokenizer/, as an SD-1.x folder has them."""
    base = tmp_path / "base-with-text"
    shutil.copytree(tiny_base_dir, base)
    make_tiny_text_encoder(base, seed=4)
    return base


def test_pull_saves_the_text_encoder_for_the_paper_selector(tmp_path, base_with_text_encoder) -> None:
    release = tmp_path / "pre-trained"
    write_official_selector(release, randomize(SelectorHeads(embed_dim=32), 3))
    models = tmp_path / "models"

    result = pull(models, base=str(base_with_text_encoder), official=str(release), tasks=[])

    text_dir = models / SELECTOR_TEXT_FOLDER
    assert result.selector_text == str(text_dir) and result.notes == []
    original = CLIPTextModel.from_pretrained(base_with_text_encoder, subfolder="text_encoder")
    saved = CLIPTextModel.from_pretrained(text_dir, subfolder="text_encoder")
    for key, tensor in original.state_dict().items():
        assert torch.equal(saved.state_dict()[key], tensor), key
    tokenizer = CLIPTokenizer.from_pretrained(text_dir, subfolder="tokenizer")
    assert tokenizer("remove the rain").input_ids == CLIPTokenizer.from_pretrained(
        base_with_text_encoder, subfolder="tokenizer")("remove the rain").input_ids
    # What pull wrote is all paper mode needs.
    selector = PaperSelector.from_pretrained(models / "plugin_selector", text_dir)
    assert list(selector.scores("remove the rain", {"derain": torch.randn(4, 32)})) == ["derain", None]

    again = pull(models, base=str(base_with_text_encoder), official=None)
    assert str(text_dir) in again.kept and again.selector_text == str(text_dir)


def test_an_unloadable_text_encoder_is_a_note_not_a_failed_pull(tmp_path, base_with_text_encoder) -> None:
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (base_with_text_encoder / "tokenizer" / name).unlink()

    result = pull(tmp_path / "models", base=str(base_with_text_encoder), official=None)

    assert result.base == str(tmp_path / "models" / "base") and result.selector_text is None
    assert len(result.notes) == 1 and "tokenizer" in result.notes[0]
    assert not (tmp_path / "models" / SELECTOR_TEXT_FOLDER).exists()


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
