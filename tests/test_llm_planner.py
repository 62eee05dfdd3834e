"""The LLM planner: valid answers become plans, bad ones are retried once and then replaced by the deterministic
plan with a note; it never crashes. Scripted answers come from langchain's own fake chat model; the last test
runs a real local model (SmolLM2-135M through llama.cpp, in its own process: see test_local_llm.py)."""

from __future__ import annotations

import json

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from assistant.planning import load_planner
from assistant.planning.llm import LLMPlanner, LLMUnavailable, load_chat_model

REQUEST = "brighten it and remove the rain"


@pytest.fixture(scope="module")
def deterministic():
    return load_planner()


def planner_with(deterministic, *answers: str) -> tuple[LLMPlanner, FakeListChatModel]:
    model = FakeListChatModel(responses=list(answers))
    return LLMPlanner(model, deterministic, name="fake"), model


def answer(*plugins: str) -> str:
    return "Sure! ```json\n" + json.dumps({"steps": [{"plugin": p, "reason": "r"} for p in plugins]}) + "\n```"


def test_a_valid_answer_becomes_the_plan(deterministic) -> None:
    llm, _ = planner_with(deterministic, answer("diffplugin/lowlight-classic", "diffplugin/derain-classic"))
    plan = llm.plan(REQUEST)
    assert plan.source == "llm"
    assert [(s.plugin, s.task) for s in plan.steps] == [("diffplugin/lowlight-classic", "lowlight"),
                                                        ("diffplugin/derain-classic", "derain")]


def test_a_bad_answer_is_retried_once_with_the_error(deterministic) -> None:
    llm, model = planner_with(deterministic, "I think you should brighten it.", answer("diffplugin/derain-classic",
                                                                                        "diffplugin/lowlight-classic"))
    plan = llm.plan(REQUEST)
    assert plan.source == "llm" and [s.task for s in plan.steps] == ["derain", "lowlight"]
    assert model.i == 0  # both scripted answers were used (the fake model cycles back to the start)


@pytest.mark.parametrize("answers", [
    ("nonsense", "still nonsense"),
    (answer("acme/does-not-exist"), answer("acme/does-not-exist")),
    (answer("diffplugin/crop"), answer("diffplugin/crop")),  # registered, but not a task the request asks for
    ('{"steps": "all of them"}', '{"steps": [{"plugin": 3}]}'),
])
def test_unusable_answers_fall_back_to_the_deterministic_plan(deterministic, answers) -> None:
    llm, _ = planner_with(deterministic, *answers)
    plan = llm.plan(REQUEST)
    expected = deterministic.plan(REQUEST)
    assert plan.source == "selector" and [s.plugin for s in plan.steps] == [s.plugin for s in expected.steps]
    assert any("LLM's plan was not usable" in note for note in plan.notes)


def test_an_unreachable_model_is_a_note_not_a_crash(deterministic) -> None:
    class Broken:
        def invoke(self, messages):
            raise ConnectionError("connection refused")

    plan = LLMPlanner(Broken(), deterministic, name="broken").plan(REQUEST)
    assert [s.task for s in plan.steps] == ["derain", "lowlight"]
    assert any("could not be reached" in note for note in plan.notes)


def test_unknown_provider_and_missing_packages_are_clear() -> None:
    with pytest.raises(LLMUnavailable, match="unknown provider"):
        load_chat_model("carrier-pigeon:fast")


def test_a_real_small_model_never_breaks_the_plan(deterministic) -> None:
    """SmolLM2-135M is too small to plan well: whatever it answers, the plan is valid and runnable. Needs the
    `llm` extra, which the README's test command installs."""
    llm = LLMPlanner(load_chat_model("smollm2"), deterministic, name="smollm2")
    for request in (REQUEST, "clear the fog", "write me a poem"):
        plan = llm.plan(request)
        assert not any("the local model" in note for note in plan.notes)  # it ran: no crash, no time-out
        known = {s.id for s in deterministic.registry.plugins()}
        assert all(step.plugin in known for step in plan.steps)
        wanted = {s.task for s in deterministic.plan(request).steps}
        assert {s.task for s in plan.steps} <= wanted
        assert plan.source == "llm" or any("deterministic plan" in n for n in plan.notes)
