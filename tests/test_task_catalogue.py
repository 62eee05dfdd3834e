"""The task catalogue (registry/tasks.py) is the one list of task ids: every built-in manifest, the order policy,
the detector and `models pull` name only tasks it knows, and the copies that still live elsewhere agree with it."""

from __future__ import annotations

import pytest

from assistant.planning.policy import POLICY_FILE, OrderPolicy
from registry.discover import BUILTIN_FOLDERS
from registry.manifest import _TASK, load_manifest
from registry.tasks import ADJUSTMENTS, OFFICIAL, TASKS, describe
from registry.tasks import RESTORATION as CATALOGUE_RESTORATION

BUILTIN = [load_manifest(path) for folder in BUILTIN_FOLDERS for path in sorted(folder.glob("*.yaml"))]


def test_every_task_a_built_in_manifest_names_is_in_the_catalogue() -> None:
    assert len(BUILTIN) >= 20  # both folders were found: 8 Diff-Plugin tasks and the built-in code plugins
    named = {task for manifest in BUILTIN for task in manifest.tasks}
    assert named - set(TASKS) == set()


def test_every_catalogue_task_is_served_by_a_built_in_plugin() -> None:
    named = {task for manifest in BUILTIN for task in manifest.tasks}
    assert set(TASKS) - named == set()


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


def test_the_detector_and_the_order_policy_name_known_tasks() -> None:
    from assistant.detector import TASKS as DETECTED
    from assistant.detector import UNCOVERED

    assert set(DETECTED) - set(UNCOVERED) <= set(CATALOGUE_RESTORATION)
    for rule in OrderPolicy.load(POLICY_FILE).rules:
        assert rule.first in TASKS and rule.then in TASKS, rule
