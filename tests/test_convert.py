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
    convert_official(source, out)
    (out / "note.txt").write_text("old")
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_official(source, out)
    assert (out / "note.txt").read_text() == "old"
    convert_official(source, out, overwrite=True)
    assert not (out / "note.txt").exists() and (out / "plugin.json").is_file()


def test_overwrite_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch) -> None:
    release = tmp_path / "pre-trained"
    source = write_official_task(release / "derain", tiny_official_plugin("derain", 0))
    write_official_task(release / "dehaze", tiny_official_plugin("dehaze", 1))
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")

    with pytest.raises(FileExistsError, match="does not look like a converted plugin folder"):
        convert_official(source, mine, overwrite=True)
    for dangerous in (release, source, tmp_path):
        with pytest.raises(ConversionError, match="must be a new folder"):
            convert_official(source, dangerous, overwrite=True)
    monkeypatch.chdir(mine)
    with pytest.raises(ConversionError, match="current folder"):
        convert_official(source, mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    assert (release / "dehaze" / "tpb.pt").is_file()


@pytest.mark.parametrize(("key", "value"), [("global_pool_conditions", True), ("class_embed_type", "timestep")])
def test_controlnet_keys_that_change_the_model_are_refused(tmp_path, key, value) -> None:
    source = write_official_task(tmp_path / "derain", tiny_official_plugin("derain", 0))
    config = json.loads((source / "scb" / "config.json").read_text())
    (source / "scb" / "config.json").write_text(json.dumps({**config, key: value}))
    with pytest.raises(ConversionError, match=key):
        convert_official(source, tmp_path / "out")


def test_the_published_lowlight_config_builds_the_full_size_scb(tmp_path) -> None:
    from tests.official_format import OFFICIAL_LOWLIGHT_SCB_CONFIG

    scb_dir = tmp_path / "lowlight" / "scb"
    scb_dir.mkdir(parents=True)
    (scb_dir / "config.json").write_text(json.dumps(OFFICIAL_LOWLIGHT_SCB_CONFIG))
    scb = randomize(SCBNet(), 4)
    torch.save(scb.state_dict(), scb_dir / "diffusion_pytorch_model.bin")
    torch.save({"model": randomize(TPBNet(), 5).state_dict()}, tmp_path / "lowlight" / "tpb.pt")

    [item] = convert_official(tmp_path / "lowlight", tmp_path / "out")

    assert item.parameters == 14_863_616
    assert item.ignored_config_keys == sorted([
        "class_embed_type", "concat_input", "conditioning_embedding_out_channels",
        "controlnet_conditioning_channel_order", "downsample_padding", "enable_mask", "global_pool_conditions",
        "mid_block_scale_factor", "num_class_embeds", "projection_class_embeddings_input_dim",
        "resnet_time_scale_shift", "use_vae_conditioning", "vae_cond_in_channels", "way_to_concat"])
    assert TaskPlugin.from_pretrained(tmp_path / "out").settings.start == "noise"


def test_a_converted_folder_is_recognised(tmp_path) -> None:
    source = write_official_task(tmp_path / "derain", tiny_official_plugin("derain", 0))
    convert_official(source, tmp_path / "out")
    with pytest.raises(ConversionError, match="already a converted plugin folder"):
        convert_official(tmp_path / "out", tmp_path / "again")
