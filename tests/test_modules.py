"""TPB and SCB: official names and shapes, parameter counts, zero-init behaviour, save/load."""

from __future__ import annotations

import pytest
import torch

from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.tpb import TPBNet

# Official SCB tensors (spec §3), name -> shape, at full size.
_RESNET = {
    "norm1.weight": (320,), "norm1.bias": (320,), "conv1.weight": (320, 320, 3, 3), "conv1.bias": (320,),
    "time_emb_proj.weight": (320, 1280), "time_emb_proj.bias": (320,), "norm2.weight": (320,), "norm2.bias": (320,),
    "conv2.weight": (320, 320, 3, 3), "conv2.bias": (320,),
}
_BLOCK = {
    "norm1.weight": (320,), "norm1.bias": (320,), "norm2.weight": (320,), "norm2.bias": (320,),
    "norm3.weight": (320,), "norm3.bias": (320,),
    "attn1.to_q.weight": (320, 320), "attn1.to_k.weight": (320, 320), "attn1.to_v.weight": (320, 320),
    "attn1.to_out.0.weight": (320, 320), "attn1.to_out.0.bias": (320,),
    "attn2.to_q.weight": (320, 320), "attn2.to_k.weight": (320, 768), "attn2.to_v.weight": (320, 768),
    "attn2.to_out.0.weight": (320, 320), "attn2.to_out.0.bias": (320,),
    "ff.net.0.proj.weight": (2560, 320), "ff.net.0.proj.bias": (2560,), "ff.net.2.weight": (320, 1280),
    "ff.net.2.bias": (320,),
}
_ATTENTION = {
    "norm.weight": (320,), "norm.bias": (320,), "proj_in.weight": (320, 320, 1, 1), "proj_in.bias": (320,),
    "proj_out.weight": (320, 320, 1, 1), "proj_out.bias": (320,),
    **{f"transformer_blocks.0.{k}": v for k, v in _BLOCK.items()},
}
OFFICIAL_SCB = {
    "controlnet_cond_embedding.weight": (320, 4, 3, 3), "controlnet_cond_embedding.bias": (320,),
    "time_embedding.linear_1.weight": (1280, 320), "time_embedding.linear_1.bias": (1280,),
    "time_embedding.linear_2.weight": (1280, 1280), "time_embedding.linear_2.bias": (1280,),
    **{f"down_blocks.0.resnets.{i}.{k}": v for i in range(2) for k, v in _RESNET.items()},
    **{f"down_blocks.0.attentions.{i}.{k}": v for i in range(2) for k, v in _ATTENTION.items()},
    **{f"controlnet_down_blocks.{i}.{p}": s for i in range(3)
       for p, s in (("weight", (320, 320, 1, 1)), ("bias", (320,)))},
}
OFFICIAL_TPB = {
    "visual_projection.0.weight": (1024, 1024), "visual_projection.0.bias": (1024,),
    "visual_projection.1.weight": (1024,), "visual_projection.1.bias": (1024,),
    "visual_projection.3.weight": (1024, 1024), "visual_projection.3.bias": (1024,),
    "visual_projection.4.weight": (1024,), "visual_projection.4.bias": (1024,),
    "visual_projection.6.weight": (768, 1024), "visual_projection.6.bias": (768,),
}


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_full_size_tpb_matches_official_names_shapes_and_count() -> None:
    tpb = TPBNet()
    assert shapes(tpb) == OFFICIAL_TPB
    assert sum(p.numel() for p in tpb.parameters()) == 2_890_496


def test_full_size_scb_matches_official_names_shapes_and_count() -> None:
    scb = SCBNet()
    assert len(OFFICIAL_SCB) == 84
    assert shapes(scb) == OFFICIAL_SCB
    assert sum(p.numel() for p in scb.parameters()) == 11_973_120


def test_tpb_maps_patch_tokens_to_prompt_width() -> None:
    tpb = TPBNet(clip_v_dim=16, cross_attention_dim=8)
    assert tpb(torch.randn(2, 5, 16)).shape == (2, 5, 8)


def test_fresh_scb_outputs_zeros_and_depends_on_its_inputs_once_trained() -> None:
    torch.manual_seed(0)
    scb = SCBNet(block_out_channels=(16,), cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4)
    cond, prompt = torch.randn(1, 4, 6, 6), torch.randn(1, 3, 8)
    fresh = scb(cond, 500, prompt).down_block_res_samples
    assert len(fresh) == 3 and all(r.shape == (1, 16, 6, 6) for r in fresh)
    assert all(torch.count_nonzero(r) == 0 for r in fresh)

    for conv in scb.controlnet_down_blocks:
        torch.nn.init.normal_(conv.weight)
    base = scb(cond, 500, prompt).down_block_res_samples[1]
    assert not torch.allclose(base, scb(cond + 1, 500, prompt).down_block_res_samples[1])
    assert not torch.allclose(base, scb(cond, 100, prompt).down_block_res_samples[1])
    assert not torch.allclose(base, scb(cond, 500, prompt * 2).down_block_res_samples[1])
    assert torch.allclose(base * 0.5, scb(cond, 500, prompt, conditioning_scale=0.5).down_block_res_samples[1])


def test_scb_rejects_unsupported_layouts() -> None:
    with pytest.raises(ValueError, match="exactly one block"):
        SCBNet(block_out_channels=(320, 640))
    with pytest.raises(ValueError, match="divisible"):
        SCBNet(block_out_channels=(30,), attention_head_dim=8, norm_num_groups=2)


def test_save_and_load_round_trip_as_safetensors(tmp_path, make_plugin) -> None:
    from plugins.diffplugin.plugin import TaskPlugin

    plugin = make_plugin("lowlight")
    plugin.save_pretrained(tmp_path / "p")
    for part in ("tpb", "scb"):
        files = sorted(f.name for f in (tmp_path / "p" / part).iterdir())
        assert files == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded = TaskPlugin.from_pretrained(tmp_path / "p")
    assert loaded.settings == plugin.settings and loaded.settings.start == "noise"
    for a, b in ((plugin.tpb, loaded.tpb), (plugin.scb, loaded.scb)):
        original, reloaded = a.state_dict(), b.state_dict()
        assert original.keys() == reloaded.keys()
        assert all(torch.equal(original[k], reloaded[k]) for k in original)


def test_loading_a_folder_that_is_not_a_plugin_says_what_to_do(tmp_path) -> None:
    from plugins.diffplugin.plugin import TaskPlugin

    with pytest.raises(FileNotFoundError, match="models convert"):
        TaskPlugin.from_pretrained(tmp_path)


def test_seeded_plugins_are_reproducible_and_leave_the_global_stream_alone(tiny_pipe) -> None:
    from plugins.diffplugin.plugin import TaskPlugin

    def build(seed=None):
        return TaskPlugin.for_base(tiny_pipe.unet, tiny_pipe.image_encoder, "derain", seed=seed)

    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, b = build(seed=5), build(seed=5)
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(a.tpb.visual_projection[0].weight, b.tpb.visual_projection[0].weight)
    unseeded_1, unseeded_2 = build(), build()
    assert not torch.equal(unseeded_1.tpb.visual_projection[0].weight, unseeded_2.tpb.visual_projection[0].weight)
