"""The offline Plugin-Selector as shipped: what it selects, in which order, what it refuses, and plugins it has
never seen; its evaluation on the validation split it was never trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from assistant.selector.clauses import split_clauses
from assistant.selector.evaluate import evaluate
from assistant.selector.instructions import DATASET, load_instructions, training_set
from assistant.selector.model import WEIGHTS, Candidate, OfflineSelector, SupportBank

TASKS = ("derain", "desnow", "dehaze", "deblur", "demoire", "highlight", "lowlight", "face")
OFFICIAL = [Candidate(f"diffplugin/{t}", t, ()) for t in TASKS]
COLORIZE = Candidate("acme/colorize", "colorize", ("colorize this black and white photo",
                                                    "add colour to my old grayscale picture",
                                                    "turn this monochrome scan into a colour image"))


@pytest.fixture(scope="module")
def shipped() -> OfflineSelector:
    return OfflineSelector.load(OFFICIAL)


def test_clauses_keep_the_order_the_user_named_things_in() -> None:
    assert split_clauses("remove the rain, then brighten it") == ["remove the rain", "brighten it"]
    assert split_clauses("brighten it, but first get rid of the fog") == ["brighten it", "get rid of the fog"]
    assert split_clauses("derain") == ["derain"]


def test_hurried_joiners_split_too() -> None:
    assert split_clauses("pls remvoe teh fogg adn make it brigther") == ["pls remvoe teh fogg", "make it brigther"]
    assert split_clauses("remove rain & brighten") == ["remove rain", "brighten"]
    assert split_clauses("derain tehn fix the colours") == ["derain", "fix the colours"]
    assert split_clauses("the band played in the sand") == ["the band played in the sand"]  # words, not parts


def test_a_typo_ridden_compound_request_keeps_both_tasks(tmp_path: Path) -> None:
    """Issue 15: "adn" once hid the brightening, and the photo came out darker."""
    from assistant.paths import open_registry
    from assistant.selector import load_selector

    selector = load_selector(open_registry(tmp_path / "reg"))
    selection = selector.select("pls remvoe teh fogg adn make it brigther, its to dakr")
    assert set(selection.tasks) == {"dehaze", "lowlight"}


@pytest.mark.parametrize(("text", "tasks"), [
    ("please get rid of the rain streaks", ["derain"]),
    ("the photo is way too dark", ["lowlight"]),
    ("remove the rain, then brighten it", ["derain", "lowlight"]),
    ("brighten it, but first get rid of the fog", ["lowlight", "dehaze"]),
    ("first remove the moire, then the glare", ["demoire", "highlight"]),
])
def test_selects_what_was_asked_in_the_named_order(shipped: OfflineSelector, text: str, tasks: list[str]) -> None:
    selection = shipped.select(text)
    assert selection.tasks == tasks
    assert [p.id for p in selection.plugins] == [f"diffplugin/{t}" for t in tasks]
    assert all(0.5 < p.score <= 1.0 for p in selection.plugins)


@pytest.mark.parametrize("text", ["add some snow to make it festive", "what's the weather like tomorrow?",
                                  "write me a poem about autumn", "make it look like a watercolour painting"])
def test_out_of_scope_selects_nothing(shipped: OfflineSelector, text: str) -> None:
    selection = shipped.select(text)
    assert selection.rejected, selection.to_json()
    assert selection.to_json()["plugins"] == []


def test_a_plugin_registered_after_training_is_selectable_by_its_examples() -> None:
    request = "please colourise my grandma's old b&w photo"
    assert OfflineSelector.load(OFFICIAL).select(request).rejected
    selection = OfflineSelector.load([*OFFICIAL, COLORIZE]).select(request + ", then remove the rain")
    assert [(p.id, p.task) for p in selection.plugins] == [("acme/colorize", "colorize"), ("diffplugin/derain",
                                                                                            "derain")]


def test_a_task_no_enabled_plugin_serves_is_said_not_swapped(shipped: OfflineSelector) -> None:
    without_derain = OfflineSelector(shipped.encoder, SupportBank.load(WEIGHTS),
                                     [c for c in OFFICIAL if c.task != "derain"], shipped.config)
    selection = without_derain.select("remove the rain streaks")
    assert selection.rejected
    assert any("derain" in note for note in selection.notes)


def test_between_plugins_of_one_task_their_own_examples_decide(shipped: OfflineSelector) -> None:
    night = Candidate("acme/night", "lowlight", ("brighten this night shot of the city",))
    indoor = Candidate("acme/indoor", "lowlight", ("brighten the dark living room photo",))
    selector = OfflineSelector(shipped.encoder, SupportBank.load(WEIGHTS), [night, indoor], shipped.config)
    assert selector.select("the living room picture is too dark").plugins[0].id == "acme/indoor"
    assert selector.select("the night shot of the city is too dark").plugins[0].id == "acme/night"


def test_empty_request_is_refused(shipped: OfflineSelector) -> None:
    with pytest.raises(ValueError, match="empty"):
        shipped.select("   ")


def test_shipped_weights_never_saw_the_validation_split() -> None:
    bank = set(json.loads((WEIGHTS / "bank.json").read_text())["texts"])
    val = load_instructions(DATASET, split="val")
    assert not bank & {r.text for r in val}
    assert {r.text for r in training_set() if r.kind != "compound"} <= bank  # compounds go in as clauses
    record = json.loads((WEIGHTS / "selector.json").read_text())["training"]
    assert record["requests"] == len(training_set())


def test_validation_accuracy_holds(shipped: OfflineSelector) -> None:
    """A regression guard a little below the figures in docs/selector.md (measured with `eval selector`)."""
    report = evaluate(shipped.select, load_instructions(DATASET, split="val"), "val")
    accuracy = {kind: score.accuracy for kind, score in report.by_kind.items()}
    assert accuracy["single"] >= 0.95 and accuracy["compound"] >= 0.85 and accuracy["oos"] >= 0.88, accuracy
    assert len(report.lines) == sum(score.lines for score in report.by_kind.values())


def test_registry_candidates_use_examples_description_and_state(tmp_path) -> None:
    from assistant.selector.candidates import examples_of, registry_candidates
    from registry.store import Registry

    candidates = {c.id: c for c in registry_candidates(Registry(tmp_path / "reg", models_dir=tmp_path / "models"))}
    assert {f"diffplugin/{t}" for t in TASKS} <= set(candidates)
    assert candidates["diffplugin/dehaze-classic"].runnable  # built-in code plugins need no weights
    derain = candidates["diffplugin/derain"]
    assert derain.task == "derain" and not derain.runnable  # no weights pulled into this models folder
    assert "remove the rain" in derain.examples
    assert derain.examples[-1] == "Removes rain streaks and raindrops from photos taken in the rain."

    from types import SimpleNamespace

    assert examples_of(SimpleNamespace(examples=["one"], description="No sentence end")) == ("one", "No sentence end")
