"""The shipped selector on requests in other people's words: everyday names for each degradation (requests written
for this test and kept out of the training data), no task nobody asked for, and an installed plugin chosen for
requests worded like its own examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.paths import open_registry
from assistant.selector import load_selector
from assistant.selector.instructions import EXAMPLE_FILES, training_set
from assistant.selector.model import WEIGHTS, Candidate, OfflineSelector, SupportBank
from tests.plugin_folders import code_folder, python_folder

#: Held out: none of these is in the training data or the shipped bank (checked below).
EVERYDAY = [
    ("the photo is covered in tiny speckles, can you clean it", "denoise"),
    ("grainy shot from my phone, smooth it", "denoise"),
    ("so many little dots all over this picture, get rid of them", "denoise"),
    ("fog everywhere, can't see a thing", "dehaze"),
    ("please take away the glare on the glass table", "highlight"),
    ("snowflakes all over my photo, get rid", "desnow"),
    ("its way too dark, brighten pls", "lowlight"),
    ("the picture got smudgy because my hand moved", "deblur"),
    ("rain streaks everywhere, erase them", "derain"),
    ("my screen photo has wavy rainbow lines", "demoire"),
]
#: Words that once pulled in a second task: a face step for "ugly" or "night", deblur for "poor lighting".
NOT_NAMED = [
    ("this grainy photo is an eyesore, please clean it up", "denoise", "face"),
    ("shot this late at night, can you enhance it", "lowlight", "face"),
    ("the lighting was poor when I took it, fix it please", "lowlight", "deblur"),
    ("the noise in this family picture is awful", "denoise", "face"),
]
#: A plugin for a task the shipped data does not know, with examples a nearby shipped task (deblur) also covers.
CRISP_MANIFEST = """schema_version: "1.0"
id: acme/crisp
version: 1.0.0
name: Crisp
description: Adds crispness to edges.
tasks: [crispen]
examples: [crispen the edges, give the outlines more bite, make the edges crisper]
kind: python
python: {entry_point: "crisp:crisp"}
license: MIT
authors: [{name: Test Author}]
"""
CRISP_CODE = "def crisp(image):\n    return image\n"


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> OfflineSelector:
    """Over the default registry: the shipped plugins, built-ins included (denoise and the adjustments)."""
    return load_selector(open_registry(tmp_path_factory.mktemp("voices") / "reg"))


def test_the_held_out_requests_were_never_trained_on() -> None:
    texts = {(case.values if hasattr(case, "values") else case)[0].lower() for case in EVERYDAY + NOT_NAMED}
    bank = {text.lower() for text in json.loads((WEIGHTS / "bank.json").read_text())["texts"]}
    assert not texts & bank
    assert not texts & {row.text.lower() for row in training_set(EXAMPLE_FILES)}


@pytest.mark.parametrize(("text", "task"), EVERYDAY)
def test_everyday_words_select_the_task(shipped: OfflineSelector, text: str, task: str) -> None:
    assert shipped.select(text).tasks == [task]


@pytest.mark.parametrize(("text", "task", "unwanted"), NOT_NAMED)
def test_no_task_nobody_asked_for(shipped: OfflineSelector, text: str, task: str, unwanted: str) -> None:
    tasks = shipped.select(text).tasks
    assert unwanted not in tasks
    assert tasks == [task]


@pytest.mark.parametrize("text", ["sharpen the photo", "the picture is a bit soft, add some sharpness"])
def test_an_installed_plugin_wins_on_its_own_examples(tmp_path: Path, text: str) -> None:
    from registry.store import Registry

    store = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    assert load_selector(store).select(text).tasks == ["deblur"]  # before: the built-in deblur
    store.install(python_folder(tmp_path / "acme-sharpen"), trust=True)
    selection = load_selector(store).select(text)
    assert [p.id for p in selection.plugins] == ["acme/sharpen"]
    assert any("deblur" in note and "acme/sharpen" in note for note in selection.notes)


def test_an_installed_plugin_takes_only_what_its_examples_say(tmp_path: Path) -> None:
    from registry.store import Registry

    store = Registry(tmp_path / "reg", models_dir=tmp_path / "models")
    store.install(code_folder(tmp_path / "crisp", CRISP_MANIFEST, CRISP_CODE), trust=True)
    selector = load_selector(store)
    assert selector.select("crispen the edges please").tasks == ["crispen"]
    assert selector.select("make the edges crisper").tasks == ["crispen"]  # its own example, word for word
    # Requests its examples do not say stay with the shipped tasks, and so does the rest of a compound request.
    assert selector.select("my hand shook and the whole photo is blurred").tasks == ["deblur"]
    assert selector.select("remove the rain, then crispen the edges").tasks == ["derain", "crispen"]
    assert selector.select("add some snow to make it festive").rejected


def test_only_an_installed_plugin_overrides_a_shipped_task(shipped: OfflineSelector) -> None:
    """The same examples shipped with diffplugin (not installed) compete only through the label scores."""
    examples = ("sharpen the photo", "add some sharpness", "make it sharper")  # also deblur's shipped words
    bank = SupportBank.load(WEIGHTS)
    deblur = Candidate("diffplugin/deblur", "deblur", ())
    request = "sharpen the photo a bit"
    chosen = {}
    for installed in (False, True):
        crisp = Candidate("acme/crisp", "crispen", examples, installed=installed)
        selector = OfflineSelector(shipped.encoder, bank, [deblur, crisp], shipped.config)
        chosen[installed] = selector.select(request).tasks
    assert chosen[True] == ["crispen"]
    assert chosen[False] != chosen[True]


@pytest.mark.parametrize(("text", "tasks"), [
    # Two clauses that each ask for a task: the out-of-scope third one does not veto them.
    ("remove the rain, make it brighter and put my cat in a hat", ["derain", "lowlight"]),
    ("clear the fog and brighten it, then post it on instagram", ["dehaze", "lowlight"]),
    # One clause that only happens to name a degradation inside a request that, as a whole, asks for none.
    ("what's the forecast for the weekend, any rain?", []),
    ("tell me a joke about snow, thanks", []),
])
def test_the_whole_request_veto(shipped: OfflineSelector, text: str, tasks: list[str]) -> None:
    assert shipped.select(text).tasks == tasks


def test_two_asking_clauses_are_never_vetoed(shipped: OfflineSelector) -> None:
    """With no margin at all, the whole request still vetoes one stray clause but not two that each ask."""
    strict = OfflineSelector(shipped.encoder, SupportBank.load(WEIGHTS), shipped.candidates,
                             shipped.config.model_copy(update={"veto_margin": 0.0}))
    assert strict.select("remove the rain, make it brighter and put my cat in a hat").tasks == ["derain", "lowlight"]
    assert strict.select("what's the forecast for the weekend, any rain?").tasks == []
