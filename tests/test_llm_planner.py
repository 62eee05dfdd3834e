"""The LLM planner: its prompt comes from the task catalogue and the shipped order policy; it asks for answers
constrained to a schema of the offered plugins; valid answers become plans, bad ones are retried once and then
replaced by the deterministic plan with a note; it never crashes. Scripted answers come from langchain's own fake
chat model; the last test runs a real local model (SmolLM2-135M through llama.cpp, in its own process: see
test_local_llm.py)."""

from __future__ import annotations

import json
import re

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from assistant.planning import load_planner
from assistant.planning.llm import LLMPlanner, LLMUnavailable, load_chat_model, order_rules, plan_schema, system_prompt
from assistant.planning.policy import POLICY_FILE, OrderPolicy
from plugins.tasks import TASKS

REQUEST = "brighten it and remove the rain"


@pytest.fixture(scope="module")
def deterministic():
    return load_planner()


def planner_with(deterministic, *answers: str) -> tuple[LLMPlanner, FakeListChatModel]:
    model = FakeListChatModel(responses=list(answers))
    return LLMPlanner(model, deterministic, name="fake"), model


def answer(*plugins: str, **step: object) -> str:
    steps = [{"plugin": p, "reason": "r", **step} for p in plugins]
    return "Sure! ```json\n" + json.dumps({"steps": steps}) + "\n```"


def test_a_valid_answer_becomes_the_plan(deterministic) -> None:
    llm, _ = planner_with(deterministic, answer("diffplugin/derain-classic", "diffplugin/lowlight-classic"))
    plan = llm.plan(REQUEST)
    assert plan.source == "llm"
    assert [(s.plugin, s.task) for s in plan.steps] == [("diffplugin/derain-classic", "derain"),
                                                        ("diffplugin/lowlight-classic", "lowlight")]
    assert [s.reason for s in plan.steps] == ["r", "r"]  # the model's explanations
    assert all(s.confidence is not None for s in plan.steps)  # the selector's, kept


def test_without_a_stated_order_the_policy_orders_the_models_steps(deterministic) -> None:
    llm, _ = planner_with(deterministic, answer("diffplugin/lowlight-classic", "diffplugin/derain-classic"))
    plan = llm.plan(REQUEST)
    expected, _ = deterministic.policy.order(["lowlight", "derain"])
    assert [s.task for s in plan.steps] == expected and plan.order == "policy"


def test_an_order_the_user_stated_is_the_models_to_follow(deterministic) -> None:
    stated = "brighten it, then remove the rain"  # against the policy (derain before lowlight)
    llm, _ = planner_with(deterministic, answer("diffplugin/lowlight-classic", "diffplugin/derain-classic"))
    plan = llm.plan(stated)
    assert [s.task for s in plan.steps] == ["lowlight", "derain"] and plan.order == "user"


def test_amounts_become_the_steps_mix_or_a_declared_option(deterministic) -> None:
    llm, _ = planner_with(deterministic, json.dumps({"steps": [
        {"plugin": "diffplugin/lowlight-classic", "params": {"brightness": 0.5}, "mix": 0.5, "reason": "a little"}]}))
    plan = llm.plan("make it a little brighter")
    assert [(s.plugin, s.params, s.mix) for s in plan.steps] == [("diffplugin/lowlight-classic", {"brightness": 0.5},
                                                                   0.5)]


def test_the_models_plan_keeps_what_the_deterministic_plan_knew(deterministic) -> None:
    request = "remove the rain, make it brighter and put my cat in a hat"  # the hat is left unplaced
    llm, _ = planner_with(deterministic, answer("diffplugin/derain-classic", "diffplugin/lowlight-classic"))
    plan, base = llm.plan(request), deterministic.plan(request)
    mine = {"steps", "source", "order", "policy_version", "notes"}
    assert plan.source == "llm" and plan.model_dump(exclude=mine) == base.model_dump(exclude=mine)
    assert plan.notes[:len(base.notes)] == base.notes


def test_a_step_the_model_leaves_out_is_named_in_a_note(deterministic) -> None:
    llm, _ = planner_with(deterministic, answer("diffplugin/derain-classic"))
    plan = llm.plan(REQUEST)
    assert [s.task for s in plan.steps] == ["derain"]
    assert any("left out lowlight" in note for note in plan.notes)


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
    (answer("diffplugin/lowlight-classic", params={"strength": 2}),) * 2,  # an option the plugin does not declare
    (answer("diffplugin/lowlight-classic", params={"brightness": "lots"}),) * 2,  # of the wrong type
    (answer("diffplugin/lowlight-classic", mix=3),) * 2,  # more than all of the effect
    (answer("diffplugin/derain-classic", "diffplugin/derain-classic"),) * 2,  # a step twice
    (answer("diffplugin/lowlight"),) * 2,  # registered, on task, but not offered: it has no weights here
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


@pytest.mark.parametrize("request_", ["write me a poem", "clear the fog"])
def test_a_request_with_nothing_for_the_model_to_decide_never_reaches_it(deterministic, request_) -> None:
    class Unused:
        def invoke(self, messages):
            raise AssertionError("the model was asked")

    plan = LLMPlanner(Unused(), deterministic, name="unused").plan(request_)
    expected = deterministic.plan(request_)
    assert plan.source == "selector" and [s.plugin for s in plan.steps] == [s.plugin for s in expected.steps]


class Recording:
    """A chat model that supports structured output the langchain way and records what it was asked for."""

    def __init__(self, reply: str, refuse: Exception | None = None) -> None:
        self.reply, self.refuse = reply, refuse
        self.schemas: list[tuple[dict, dict]] = []
        self.plain = 0

    def with_structured_output(self, schema, **kwargs):
        from langchain_core.runnables import RunnableLambda

        self.schemas.append((schema, kwargs))

        def run(messages):
            if self.refuse is not None:
                raise self.refuse
            return {"raw": self.reply, "parsed": None, "parsing_error": None}

        return RunnableLambda(run)

    def invoke(self, messages):
        self.plain += 1
        return self.reply


def offered(schema: dict) -> set[str]:
    items = schema["properties"]["steps"]["items"]
    return {plugin for step in items.get("anyOf", [items]) for plugin in step["properties"]["plugin"]["enum"]}


def test_the_model_is_asked_for_a_schema_of_the_offered_plugins_only(deterministic) -> None:
    model = Recording(answer("diffplugin/derain-classic", "diffplugin/lowlight-classic", params={}, mix=1.0))
    plan = LLMPlanner(model, deterministic, name="recording").plan(REQUEST)
    assert plan.source == "llm" and model.plain == 0
    (schema, kwargs), = model.schemas
    assert kwargs == {"method": "json_schema", "include_raw": True}
    plugins = {s.id: s for s in deterministic.registry.plugins()}
    assert offered(schema) >= {s.plugin for s in deterministic.plan(REQUEST).steps}
    assert all({"derain", "lowlight"} & set(plugins[p].manifest.tasks) for p in offered(schema))
    assert schema["properties"]["steps"]["maxItems"] == 2


def test_a_server_that_refuses_the_schema_gets_the_plain_prompt_from_then_on(deterministic) -> None:
    class BadRequestError(Exception):
        pass

    model = Recording(answer("diffplugin/derain-classic"), refuse=BadRequestError("response_format is not supported"))
    llm = LLMPlanner(model, deterministic, name="old-server")
    for _ in range(2):
        assert llm.plan(REQUEST).source == "llm"
    # Both ways of constraining were tried once (a JSON-schema format, then a forced tool call), never again.
    assert [kwargs["method"] for _, kwargs in model.schemas] == ["json_schema", "function_calling"]
    assert model.plain == 2 and not llm.structured


def test_a_server_that_refuses_the_json_schema_format_is_asked_for_a_tool_call(deterministic) -> None:
    """llama-cpp-python's server answers HTTP 500 to response_format json_schema but constrains forced tool calls,
    whose answer carries the parsed arguments and no text."""

    class ToolsOnly(Recording):
        def with_structured_output(self, schema, **kwargs):
            from langchain_core.runnables import RunnableLambda

            self.schemas.append((schema, kwargs))
            if kwargs["method"] == "json_schema":
                return RunnableLambda(lambda messages: (_ for _ in ()).throw(ValueError("Error code: 500")))
            arguments = json.loads(self.reply[self.reply.index("{"):self.reply.rindex("}") + 1])
            return RunnableLambda(lambda messages: {"raw": "", "parsed": arguments, "parsing_error": None})

    model = ToolsOnly(answer("diffplugin/derain-classic", "diffplugin/lowlight-classic"))
    llm = LLMPlanner(model, deterministic, name="tools")
    for _ in range(2):
        plan = llm.plan(REQUEST)
        assert plan.source == "llm" and {s.plugin for s in plan.steps} == {"diffplugin/derain-classic",
                                                                              "diffplugin/lowlight-classic"}
    assert [kwargs["method"] for _, kwargs in model.schemas] == ["json_schema", "function_calling", "function_calling"]
    assert model.plain == 0 and llm.structured == ["function_calling"]


def test_amounts_are_offered_only_when_the_request_states_one(deterministic) -> None:
    model = Recording(answer("diffplugin/lowlight-classic"))
    llm = LLMPlanner(model, deterministic, name="recording")
    llm.plan("remove the rain and make it brighter")
    llm.plan("remove the rain and make it a little brighter")
    (plain, _), (amount, _) = model.schemas
    items = [schema["properties"]["steps"]["items"] for schema in (plain, amount)]
    fields = [{frozenset(step["properties"]) for step in steps.get("anyOf", [steps])} for steps in items]
    assert fields == [{frozenset({"plugin", "reason"})}, {frozenset({"plugin", "params", "mix", "reason"})}]


def test_an_unreachable_server_is_not_asked_again_without_the_schema(deterministic) -> None:
    class APITimeoutError(Exception):
        pass

    model = Recording(answer("diffplugin/derain-classic"), refuse=APITimeoutError("timed out"))
    plan = LLMPlanner(model, deterministic, name="slow").plan(REQUEST)
    assert model.plain == 0 and plan.source == "selector"
    assert any("could not be reached (APITimeoutError" in note for note in plan.notes)


def rule_lines(prompt: str) -> list[tuple[str, str]]:
    return re.findall(r"^- ([\w-]+) before ([\w-]+): ", prompt, re.MULTILINE)


def test_the_prompt_states_every_rule_of_the_shipped_policy_and_nothing_else_about_order(deterministic) -> None:
    policy = OrderPolicy.load(POLICY_FILE)
    known = {s.id: s.manifest for s in deterministic.registry.plugins()}
    prompt = system_prompt(known, list(TASKS), policy)
    for rule in policy.rules:
        assert f"- {rule.first} before {rule.then}: {rule.reason}\n" in prompt
    for first, then in rule_lines(prompt):  # every stated pair is one the policy orders that way
        assert policy.order([then, first])[0] == [first, then], (first, then)
    rules = set(order_rules(policy, TASKS))
    for line in prompt.splitlines():  # no order stated anywhere else ("haze before brightening", "faces last")
        if line[2:] not in rules:
            assert not re.search(r"\b(before|after|first|last|then)\b", line, re.IGNORECASE), line


def test_the_prompt_names_only_the_rules_between_the_requests_tasks(deterministic) -> None:
    policy = OrderPolicy.load(POLICY_FILE)
    known = {s.id: s.manifest for s in deterministic.registry.plugins() if "lowlight" in s.manifest.tasks
             or "dehaze" in s.manifest.tasks or "exposure" in s.manifest.tasks}
    prompt = system_prompt(known, ["dehaze", "lowlight", "exposure"], policy)
    assert set(rule_lines(prompt)) == {("lowlight", "dehaze"), ("dehaze", "exposure"), ("lowlight", "exposure")}
    assert TASKS["dehaze"].fixes in prompt and "brightness (default 0.4)" in prompt  # catalogue and options


def test_the_schema_offers_each_plugin_with_its_own_options_only(deterministic) -> None:
    manifests = {s.id: s.manifest for s in deterministic.registry.plugins()}
    known = {p: manifests[p] for p in ("diffplugin/lowlight-classic", "diffplugin/lowlight", "diffplugin/exposure")}
    steps = plan_schema(known, 2)["properties"]["steps"]["items"]["anyOf"]
    options = {step["properties"]["plugin"]["enum"][0]: step["properties"]["params"]["properties"] for step in steps}
    assert options == {"diffplugin/lowlight-classic": {"gamma": {"type": "number"}, "brightness": {"type": "number"},
                                                        "denoise": {"type": "number"}},
                       "diffplugin/lowlight": {}, "diffplugin/exposure": {"ev": {"type": "number"}}}
    assert all(step["additionalProperties"] is False for step in steps)


@pytest.fixture(scope="module")
def smollm2():
    model = load_chat_model("smollm2")
    yield model
    model.close()


def test_a_real_small_model_never_breaks_the_plan(deterministic, smollm2) -> None:
    """SmolLM2-135M is too small to plan well, but with the schema its answers are plans of offered plugins, and
    whatever it answers, the plan is valid and runnable. Needs the `llm` extra (the README's test command)."""
    llm = LLMPlanner(smollm2, deterministic, name="smollm2")
    request = "make it a little brighter"  # one short plan: each answer token is checked against the grammar
    plan = llm.plan(request)
    assert not any("the local model" in note for note in plan.notes)  # it ran: no crash, no time-out
    base = deterministic.plan(request)
    assert {s.task for s in plan.steps} <= {s.task for s in base.steps}
    assert plan.source == "llm" or any("deterministic plan" in n for n in plan.notes)
    assert llm.structured  # the local model took the schema


def test_a_plan_the_detector_made_is_not_re_planned(deterministic) -> None:
    """"make it a little better" on a photo: the steps come from the photo's measurements, so there are no words
    for the model to read, and the chat must still see a detector plan (it asks the user about it)."""
    import skimage.data
    from PIL import Image

    photo = Image.fromarray((skimage.data.astronaut() * 0.25).astype("uint8"))  # dark: the detector finds lowlight
    expected = deterministic.plan("make it a little better", photo)
    assert expected.source == "detector" and expected.steps
    model = Recording(answer("diffplugin/lowlight-classic", params={}, mix=0.5))
    plan = LLMPlanner(model, deterministic, name="recording").plan("make it a little better", photo)
    assert plan.source == "detector" and [s.plugin for s in plan.steps] == [s.plugin for s in expected.steps]
    assert model.plain == 0 and not model.schemas  # the model was never asked
