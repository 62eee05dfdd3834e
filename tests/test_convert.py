"""Converting the official release: exact format in, safetensors with unchanged names out."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from plugins.diffplugin.convert import convert_official
from plugins.diffplugin.errors import ConversionError
from plugins.diffplugin.plugin import PluginSettings, TaskPlugin
from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.selector import SelectorHeads
from plugins.diffplugin.tpb import TPBNet
from tests.official_format import randomize, write_official_selector, write_official_task


def assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def tiny_official_plugin(task: str, seed: int) -> TaskPlugin:
    tpb = randomize(TPBNet(clip_v_dim=32, cross_attention_dim=32), seed)
    scb = randomize(SCBNet(block_out_channels=(32,), cross_attention_dim=32, attention_head_dim=2,
                           norm_num_groups=8), seed + 1)
    return TaskPlugin(tpb, scb, PluginSettings.for_task(task))


@pytest.mark.parametrize("module_prefix", [False, True])
def test_full_size_task_folder_round_trips(tmp_path, module_prefix) -> None:
    original = TaskPlugin(randomize(TPBNet(), 0), randomize(SCBNet(), 1), PluginSettings.for_task("derain"))
    source = write_official_task(tmp_path / "pre-trained" / "derain", original, module_prefix=module_prefix)

    [item] = convert_official(source, tmp_path / "out")

    assert item.kind == "plugin" and item.name == "derain"
    assert item.tensors == 94 and item.parameters == 14_863_616
    assert item.stripped_module_prefix is module_prefix
    assert "way_to_concat" in item.ignored_config_keys and "_class_name" not in item.ignored_config_keys
    converted = TaskPlugin.from_pretrained(tmp_path / "out")
    assert_same_tensors(original.tpb, converted.tpb)
    assert_same_tensors(original.scb, converted.scb)
    assert converted.settings.start == "noised-input"
    assert not list((tmp_path / "out").rglob("*.bin")) and not list((tmp_path / "out").rglob("*.pt"))


def test_whole_release_converts_every_task_and_the_selector(tmp_path) -> None:
    release = tmp_path / "pre-trained"
    originals = {task: tiny_official_plugin(task, seed) for seed, task in enumerate(["derain", "lowlight"])}
    for task, plugin in originals.items():
        write_official_task(release / task, plugin)
    heads = randomize(SelectorHeads(), 5)
    write_official_selector(release, heads)

    items = convert_official(release, tmp_path / "models")

    assert [(i.kind, i.name) for i in items] == [("plugin", "derain"), ("plugin", "lowlight"),
                                                 ("selector", "plugin_selector")]
    for task, plugin in originals.items():
        converted = TaskPlugin.from_pretrained(tmp_path / "models" / task)
        assert_same_tensors(plugin.tpb, converted.tpb)
        assert_same_tensors(plugin.scb, converted.scb)
    assert TaskPlugin.from_pretrained(tmp_path / "models" / "lowlight").settings.start == "noise"
    converted_heads = SelectorHeads.from_pretrained(tmp_path / "models" / "plugin_selector")
    assert_same_tensors(heads, converted_heads)
    assert sum(p.numel() for p in converted_heads.parameters()) == 1_181_185
    assert items[-1].stripped_module_prefix


class Exploit:
    def __reduce__(self):
        return (print, ("this code ran while loading",))


def test_pickles_that_are_not_plain_tensors_are_refused(tmp_path, capsys) -> None:
    source = write_official_task(tmp_path / "derain", tiny_official_plugin("derain", 0))
    with (source / "tpb.pt").open("wb") as f:
        pickle.dump({"model": Exploit()}, f)
    with pytest.raises(ConversionError, match=r"tpb\.pt: refused to load"):
        convert_official(source, tmp_path / "out")
    assert "this code ran" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_mismatched_tensors_are_named(tmp_path) -> None:
    plugin = tiny_official_plugin("derain", 0)
    source = write_official_task(tmp_path / "derain", plugin)
    state = plugin.scb.state_dict()
    state.pop("controlnet_down_blocks.2.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, source / "scb" / "diffusion_pytorch_model.bin")
    with pytest.raises(ConversionError, match=r"missing: controlnet_down_blocks\.2\.bias; unexpected: extra\.weight"):
        convert_official(source, tmp_path / "out")


def test_unsupported_config_and_missing_files_are_clear(tmp_path) -> None:
    source = write_official_task(tmp_path / "derain", tiny_official_plugin("derain", 0))
    config = json.loads((source / "scb" / "config.json").read_text())
    (source / "scb" / "config.json").write_text(json.dumps({**config, "block_out_channels": [32, 64]}))
    with pytest.raises(ConversionError, match="unsupported SCB configuration"):
        convert_official(source, tmp_path / "out")
    (source / "tpb.pt").unlink()
    (source / "scb" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=r"tpb\.pt: file not found"):
        convert_official(source, tmp_path / "out")
    with pytest.raises(ConversionError, match="found no official plugin"):
        convert_official(tmp_path / "derain" / "scb", tmp_path / "y")


def test_existing_output_is_kept_unless_overwrite(tmp_path) -> None:
    source = write_official_task(tmp_path / "derain", tiny_official_plugin("derain", 0))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_official(source, out)
    assert (out / "keep.txt").read_text() == "mine"
    convert_official(source, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "plugin.json").is_file()
