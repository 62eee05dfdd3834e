"""The task catalogue (plugins/tasks.py) is the one list of task ids: every built-in manifest, the order policy,
the detector, the quality check, `models pull`, the chat, the LLM prompt and the shipped data name only tasks it
knows, and the per-task tables that live beside their code are keyed by its ids."""

from __future__ import annotations

import json
import re

import pytest

from assistant.planning.policy import POLICY_FILE, OrderPolicy
from plugins.tasks import ADJUSTMENTS, OFFICIAL, TASKS, UNSERVED, describe
from plugins.tasks import RESTORATION as CATALOGUE_RESTORATION
from registry.discover import BUILTIN_FOLDERS
from registry.manifest import _TASK, load_manifest

#: Catalogue tasks a built-in plugin performs.
SERVED = {task.id for task in TASKS.values() if task.served}

BUILTIN = [load_manifest(path) for folder in BUILTIN_FOLDERS for path in sorted(folder.glob("*.yaml"))]


def test_every_task_a_built_in_manifest_names_is_in_the_catalogue() -> None:
    assert len(BUILTIN) >= 20  # both folders were found: 8 Diff-Plugin tasks and the built-in code plugins
    named = {task for manifest in BUILTIN for task in manifest.tasks}
    assert named - set(TASKS) == set()


def test_a_built_in_plugin_serves_every_catalogue_task_but_the_unserved_ones() -> None:
    named = {task for manifest in BUILTIN for task in manifest.tasks}
    assert named == SERVED
    assert UNSERVED == ("jpeg",) and set(UNSERVED) == set(TASKS) - SERVED


def test_ids_are_unique() -> None:
    # TASKS is a dict, so a repeated id would silently replace the first; the tuples are built from the list itself.
    assert len(CATALOGUE_RESTORATION) + len(ADJUSTMENTS) == len(TASKS)


@pytest.mark.parametrize("task", list(TASKS.values()), ids=list(TASKS))
def test_each_task_is_described_in_words(task) -> None:
    assert _TASK.fullmatch(task.id)  # a valid manifest task id
    assert task.name and task.fixes and not task.fixes.endswith(".")
    assert len(task.synonyms) >= 3 and len(set(task.synonyms)) == len(task.synonyms)
    assert task.name.lower() in describe(task.id) and task.fixes in describe(task.id)


def test_an_unknown_task_is_described_by_its_id() -> None:
    assert describe("sharpen") == "sharpen"


def test_restorations_and_adjustments_split_the_catalogue() -> None:
    assert set(CATALOGUE_RESTORATION) | set(ADJUSTMENTS) == set(TASKS)
    assert not set(CATALOGUE_RESTORATION) & set(ADJUSTMENTS)


def test_the_official_tasks_are_the_ones_the_diffusion_manifests_serve() -> None:
    diffusion = {task for manifest in BUILTIN if manifest.kind == "diffplugin" for task in manifest.tasks}
    assert diffusion == set(OFFICIAL)


def test_each_task_the_chat_names_has_both_its_words() -> None:
    from assistant.chat.session import SEEN

    assert set(SEEN) <= set(TASKS)
    for task in TASKS.values():
        assert bool(task.seen) == bool(task.offer), task.id
        assert SEEN.get(task.id) == ((task.seen, task.offer) if task.seen else None)


def test_the_order_policy_names_known_tasks_and_splits_them_by_the_catalogue() -> None:
    from assistant.planning import policy

    assert policy.RESTORATION is CATALOGUE_RESTORATION
    for rule in OrderPolicy.load(POLICY_FILE).rules:
        assert rule.first in TASKS and rule.then in TASKS, rule


def test_the_detector_measures_catalogue_restorations_and_reports_the_unserved_as_uncovered() -> None:
    from assistant import detector

    assert set(detector.TASKS) <= set(CATALOGUE_RESTORATION) and detector.FACE_TASK in CATALOGUE_RESTORATION
    assert set(UNSERVED) <= set(detector.TASKS)
    assert set(detector.UNCOVERED) == set(UNSERVED)
    assert detector.UNCOVERED["jpeg"] == {"seen": "JPEG compression blocks", "verb": "removes them",
                                          "search": "remove JPEG compression artifacts and blocking"}
    assert set(detector._CONDITION) == set(detector.TASKS)


def test_the_detector_calibration_is_fitted_in_the_detectors_task_order() -> None:
    # The benchmark writes the file in `TASKS` order and `detect` breaks ties between findings in it.
    from assistant import detector

    calibration = json.loads(detector.CALIBRATION_PATH.read_text(encoding="utf-8"))
    assert tuple(calibration["tasks"]) == detector.TASKS


def test_the_quality_check_has_an_entry_for_every_served_task() -> None:
    from assistant.quality import EXPECTED_CHANGES

    assert set(EXPECTED_CHANGES) == SERVED


def test_the_judges_calibrated_tasks_are_catalogue_tasks() -> None:
    from assistant.judge import CALIBRATION_PATH

    assert set(json.loads(CALIBRATION_PATH.read_text(encoding="utf-8"))["tasks"]) <= SERVED


def test_models_pull_and_the_start_modes_name_the_official_tasks() -> None:
    from plugins.diffplugin.pull import OFFICIAL_TASKS
    from plugins.diffplugin.settings import PURE_NOISE_TASKS

    assert OFFICIAL_TASKS == OFFICIAL
    assert set(PURE_NOISE_TASKS) <= set(OFFICIAL)


def test_the_synthetic_degradations_map_to_catalogue_tasks() -> None:
    from assistant.evaluation.orders import TASK_FOR
    from plugins.data.degradations import TASK_OF_DEGRADATION

    assert {task for task in TASK_OF_DEGRADATION.values() if task} <= set(OFFICIAL)
    assert {task for task in TASK_FOR.values() if task} <= SERVED


def test_the_selectors_shipped_labels_are_catalogue_tasks() -> None:
    from assistant.selector.instructions import DATASET, load_instructions
    from assistant.selector.model import BANK_TEXTS, NULL, WEIGHTS

    bank = json.loads((WEIGHTS / BANK_TEXTS).read_text(encoding="utf-8"))
    assert set(bank["labels"]) - {NULL} <= SERVED
    assert {task for row in load_instructions(DATASET) for task in row.tasks} - {NULL} <= SERVED


def test_the_llm_prompt_names_tasks_and_order_only_from_the_catalogue_and_the_policy() -> None:
    from assistant.planning import llm

    assert llm.RESTORATION is CATALOGUE_RESTORATION
    template = llm.SYSTEM + llm.AMOUNTS
    for task in TASKS:  # the tasks come in through {tasks} and {rules}, never written into the template
        assert not re.search(rf"\b{re.escape(task)}\b", template, re.IGNORECASE), task
    assert not re.search(r"\bbefore\b|\bafter\b", template)
