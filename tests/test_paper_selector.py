"""The paper's Plugin-Selector (spec §5): tiny text encoder, converted official heads, scores and the θ = 0 rule."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from transformers import CLIPTokenizer

from plugins.diffplugin.convert import convert_official
from plugins.diffplugin.selector import NULL_PROMPT, PaperSelector, SelectorHeads
from plugins.diffplugin.tiny import TINY_WIDTH, make_tiny_text_encoder
from tests.official_format import randomize, write_official_selector

D = TINY_WIDTH
N = 6  # TPB tokens per plugin; any count works, the heads max-pool over them


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_text_encoder(tmp_path_factory.mktemp("selector-text"), seed=0)


@pytest.fixture(scope="module")
def official_heads() -> SelectorHeads:
    return randomize(SelectorHeads(embed_dim=D), 7)


@pytest.fixture(scope="module")
def selector_dir(tmp_path_factory: pytest.TempPathFactory, official_heads: SelectorHeads) -> Path:
    """The heads written as the official `PromptTunner.pt` (module.-prefixed), then converted."""
    release = tmp_path_factory.mktemp("release")
    write_official_selector(release, official_heads, module_prefix=True)
    [item] = convert_official(release / "plugin_selector", release.parent / f"{release.name}-converted")
    return Path(item.output)


@pytest.fixture
def selector(selector_dir: Path, text_dir: Path) -> PaperSelector:
    return PaperSelector.from_pretrained(selector_dir, text_dir)


def test_tiny_tokenizer_round_trips_and_tokenizes_english(text_dir: Path) -> None:
    tokenizer = CLIPTokenizer.from_pretrained(text_dir, subfolder="tokenizer")
    ids = tokenizer("Remove the rain, please!").input_ids
    assert len(tokenizer) > 2 and tokenizer.model_max_length == 77
    assert len(ids) > 2 and ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids[1:-1]
    # The merges make whole words single tokens; the rest falls back to bytes and still decodes.
    assert tokenizer.convert_ids_to_tokens(ids[1:4]) == ["remove</w>", "the</w>", "rain</w>"]
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == "removetherain,please!"


def test_converted_official_selector_loads(selector: PaperSelector, official_heads: SelectorHeads) -> None:
    loaded = selector.heads.state_dict()
    for key, tensor in official_heads.state_dict().items():
        assert torch.equal(loaded[key], tensor), key
    assert selector.text_encoder.config.hidden_size == D


def test_text_embeddings_are_the_eos_token_after_the_final_layer_norm(selector: PaperSelector) -> None:
    texts = ["remove the rain", NULL_PROMPT]
    got = selector.text_embeddings(texts)
    tokens = selector.tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        hidden = selector.text_encoder(input_ids=tokens.input_ids).last_hidden_state
    eos = (tokens.input_ids == selector.tokenizer.eos_token_id).int().argmax(dim=1)  # first EOS, not padding
    assert got.shape == (2, D)
    torch.testing.assert_close(got, hidden[torch.arange(2), eos])


def test_scores_have_one_entry_per_plugin_plus_null(selector: PaperSelector) -> None:
    generator = torch.Generator().manual_seed(0)
    prompts = {"derain": torch.randn(N, D, generator=generator), "lowlight": torch.randn(1, N, D, generator=generator)}

    scores = selector.scores("remove the rain", prompts)

    assert list(scores) == ["derain", "lowlight", None]
    # Cross-check against the heads' own forward, with the null candidate built independently.
    null = selector.text_embeddings([NULL_PROMPT]).expand(N, D)
    text = selector.text_embeddings(["remove the rain"])
    expected = selector.heads(torch.stack([prompts["derain"], prompts["lowlight"][0], null]), text)[0]
    assert list(scores.values()) == pytest.approx(expected.tolist(), rel=1e-5)
    scale = selector.heads.logit_scale.exp().item()
    assert all(-scale - 1e-4 <= s <= scale + 1e-4 for s in scores.values())


def test_scores_reject_prompts_of_the_wrong_width(selector: PaperSelector) -> None:
    with pytest.raises(ValueError, match=r"prompts\['derain'\].*\[N, 32\]"):
        selector.scores("remove the rain", {"derain": torch.zeros(N, D + 1)})


def hand_made(selector: PaperSelector, text_direction: torch.Tensor) -> None:
    """proj_v = identity and proj_t = a constant: the text side is `text_direction` whatever the request, and a
    plugin whose tokens all equal v scores scale × cos(v, text_direction). Scale 2."""
    with torch.no_grad():
        selector.heads.logit_scale.fill_(math.log(2.0))
        selector.heads.proj_v.weight.copy_(torch.eye(D))
        selector.heads.proj_v.bias.zero_()
        selector.heads.proj_t.weight.zero_()
        selector.heads.proj_t.bias.copy_(text_direction)


def rows(vector: torch.Tensor) -> torch.Tensor:
    return vector.expand(N, D).clone()


@pytest.fixture
def null_and_orthogonal(selector: PaperSelector) -> tuple[torch.Tensor, torch.Tensor]:
    """The unit null feature n and a unit vector u orthogonal to it."""
    null = torch.nn.functional.normalize(selector.text_embeddings([NULL_PROMPT])[0], dim=0)
    other = torch.zeros(D)
    other[0] = 1.0
    other = other - (other @ null) * null
    return null, torch.nn.functional.normalize(other, dim=0)


def test_negative_scores_are_clamped_and_positive_ones_selected_best_first(selector, null_and_orthogonal) -> None:
    null, u = null_and_orthogonal
    hand_made(selector, u)  # null is orthogonal to the request: cosine 0
    prompts = {"lowlight": rows(-u), "derain": rows(u + null), "dehaze": rows(u)}

    scores = selector.scores("anything", prompts)
    assert scores["lowlight"] == pytest.approx(-2.0, abs=1e-4) and scores["dehaze"] == pytest.approx(2.0, abs=1e-4)
    assert scores["derain"] == pytest.approx(2.0 / math.sqrt(2), abs=1e-4)
    assert scores[None] == pytest.approx(0.0, abs=1e-4)

    selected = selector.select("anything", prompts)
    assert [task for task, _ in selected] == ["dehaze", "derain"]  # by score, not by the order given
    assert selected[0][1] == pytest.approx(2.0, abs=1e-4)


def test_nothing_positive_means_null_wins_and_nothing_runs(selector, null_and_orthogonal) -> None:
    null, u = null_and_orthogonal
    hand_made(selector, u)
    prompts = {"derain": rows(-u), "desnow": rows(-u - null)}
    scores = selector.scores("a cat", prompts)
    assert scores["derain"] < 0 and scores["desnow"] < 0
    assert selector.select("a cat", prompts) == []


def test_null_scoring_best_does_not_veto_other_positive_plugins(selector, null_and_orthogonal) -> None:
    null, u = null_and_orthogonal
    hand_made(selector, null)  # the request points exactly at the null candidate
    prompts = {"derain": rows(null + u), "lowlight": rows(-null)}
    scores = selector.scores("hello", prompts)
    assert scores[None] == pytest.approx(2.0, abs=1e-4)
    assert scores["derain"] == pytest.approx(2.0 / math.sqrt(2), abs=1e-4)
    # θ = 0 as the spec states it: null is never returned, and it does not suppress derain.
    assert [task for task, _ in selector.select("hello", prompts)] == ["derain"]
    # Only null positive: nothing runs.
    assert selector.select("hello", {"lowlight": rows(-null)}) == []


def test_missing_selector_or_text_folders_are_named(tmp_path: Path, selector_dir: Path, text_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no-selector.*config\.json"):
        PaperSelector.from_pretrained(tmp_path / "no-selector", text_dir)
    with pytest.raises(FileNotFoundError, match="no-text"):
        PaperSelector.from_pretrained(selector_dir, tmp_path / "no-text")
    partial = tmp_path / "partial"
    shutil.copytree(text_dir / "text_encoder", partial / "text_encoder")
    with pytest.raises(FileNotFoundError, match=r"partial.*tokenizer"):
        PaperSelector.from_pretrained(selector_dir, partial)


def test_a_tokenizer_without_vocabulary_is_refused(tmp_path: Path, selector_dir: Path, text_dir: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(text_dir / "text_encoder", broken / "text_encoder")
    (broken / "tokenizer").mkdir()  # present but empty: transformers would give a 2-token tokenizer
    with pytest.raises(ValueError, match=r"broken/tokenizer.*cannot tokenize"):
        PaperSelector.from_pretrained(selector_dir, broken)


def test_mismatched_widths_are_refused(tmp_path: Path, text_dir: Path) -> None:
    SelectorHeads(embed_dim=16).save_pretrained(tmp_path / "heads16")
    with pytest.raises(ValueError, match=r"16-d.*32-d"):
        PaperSelector.from_pretrained(tmp_path / "heads16", text_dir)
