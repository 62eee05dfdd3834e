"""The LLM planner: any langchain chat model turns a request into a plan, checked before it is trusted.

The model is given the request, the tasks the deterministic planner found (selector / detector), the plugins
that do them, and the order policy's rules between them; the prompt is generated from the task catalogue
(`plugins/tasks.py`) and the policy, never written by hand. Where the model supports it, its answer is
constrained to a JSON schema built for the request, whose plugin ids are only those offered (llama.cpp turns it
into a grammar; OpenAI-compatible and Ollama servers take it as structured output). The answer is then parsed
into a `Plan` and checked all the same: offered plugins only, candidate tasks only, declared options only. A plan
that fails is sent back once with the error, and otherwise replaced by the deterministic plan with a visible
note. Nothing the model says can crash the planner.

Models are named by a spec (`--llm` or $DIFFPLUGIN_LLM); `providers.py` loads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from assistant.planning.plan import Plan, Step
from assistant.planning.providers import LLMUnavailable, LocalModelError, load_chat_model
from plugins.quoting import shown
from plugins.tasks import RESTORATION, describe
from registry.kinds import kind_for

if TYPE_CHECKING:
    import PIL.Image
    from langchain_core.language_models.chat_models import BaseChatModel

    from assistant.planning.planner import Planner
    from assistant.planning.policy import OrderPolicy
    from registry.manifest import PluginManifest
    from registry.store import PluginStatus

__all__ = ["LLMPlanner", "LLMUnavailable", "LocalModelError", "load_chat_model", "message_text", "parse_plan"]

#: Longest reason the model may write for a step: a bound keeps a small model from rambling until its token limit
#: cuts the JSON short (and each token costs a grammar check against the whole vocabulary).
REASON_CHARS = 80
#: Words that state an amount for an edit ("a little brighter", "+1 EV", "rotate 90 degrees"). Only then are the
#: model offered `mix` and the plugins' options: a request without one leaves them at their defaults, so a model
#: cannot invent an amount nobody asked for, and its answer is shorter.
AMOUNT = re.compile(r"\b(a (little|bit|touch|tad|lot)|slightly|somewhat|gentl[ey]|subtl[ey]|mild(ly)?|strong(ly|er)|"
                    r"(much|way|far) (more|less|\w+er)|half|twice|double)\b|[+-]\d|"
                    r"\d\s*(%|percent|stops?\b|ev\b|degrees?\b|°|px\b|pixels\b|x\s*\d|:\d)", re.IGNORECASE)

SYSTEM = """You plan photo edits. Reply with one JSON object and nothing else, in this form:
{{"steps": [{form}]}}

Plugins you may use (id: task - name{options}):
{plugins}

The request most likely needs these tasks: {tasks}.
Give one step per task the user asked for, and no step for a task they did not ask for.

Order the steps as the user asked. If they did not say, these rules decide:
{rules}
{amounts}
"reason" says in a few words why the step is there."""
AMOUNTS = """
"mix" is how much of a step's effect is kept: 1 for all of it, 0.5 when the user asks for "a little" or "slightly".
Set an option in "params" only when the user asks for an amount of it.
"""


@dataclass
class LLMPlanner:
    """The deterministic planner's plan, re-planned by a chat model within what the deterministic planner found:
    the model chooses among the plugins for the candidate tasks, keeps or drops steps, orders them when the user
    stated an order, sets amounts ("a little brighter") and explains each step. When the user stated no order,
    the order policy orders its steps, as it does the deterministic plan's. The model is asked only where it can
    change something: two or more candidate tasks, or an amount to set."""

    model: BaseChatModel
    fallback: Planner
    name: str = "llm"
    #: The ways of asking for schema-constrained answers still to try, best first: a JSON-schema response format,
    #: else a forced tool call whose parameters are the schema (llama-cpp-python's server refuses the first and
    #: constrains the second). One the model or its server refuses is dropped for good; with none left, the plain
    #: prompt's answer is parsed.
    structured: list[str] = field(default_factory=lambda: ["json_schema", "function_calling"])

    def plan(self, request: str, image: PIL.Image.Image | None = None) -> Plan:
        base = self.fallback.plan(request, image)
        if not base.steps:  # out of scope, or nothing detected: nothing for the model to choose from
            return base
        if base.source == "detector":  # the photo's measurements chose the steps: no words for the model to read
            return base
        wanted = list(dict.fromkeys(step.task for step in base.steps))
        amounts = bool(AMOUNT.search(request))
        if len(wanted) == 1 and not amounts:  # one task, no amount: the model could only agree, slowly
            base.notes.append(f"{self.name} not asked: one task and no amount to set")
            return base
        offered = candidates(self.fallback.registry.plugins(), base)
        known = {plugin_id: status.manifest for plugin_id, status in offered.items()}
        messages: list[tuple[str, str]] = [("system", system_prompt(known, wanted, self.fallback.policy, amounts)),
                                           ("human", request)]
        schema = plan_schema(known, len(wanted), amounts)
        problem = ""
        for _attempt in range(2):
            try:
                reply = self._ask(messages, schema)
            except LocalModelError as err:
                problem = str(err)
                break
            except Exception as err:  # a provider's failure is the user's configuration, never our crash
                problem = f"the LLM could not be reached ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                break
            try:
                plan = parse_plan(reply, request, known, set(wanted))
            except ValueError as err:
                problem = f"the LLM's plan was not usable: {err}"
                messages += [("ai", reply), ("human", f"That is not a valid plan: {err}. Reply with the JSON only.")]
                continue
            return self._finish(plan, base, wanted)
        base.notes.append(f"{problem}; using the deterministic plan instead")
        return base

    def _ask(self, messages: list[tuple[str, str]], schema: dict[str, Any]) -> str:
        """The model's reply, constrained to `schema` where the model supports it."""
        while self.structured:
            method = self.structured[0]
            try:
                constrained = self.model.with_structured_output(schema, method=method, include_raw=True)
            except (AttributeError, NotImplementedError, TypeError, ValueError):  # the model has no such mode
                self.structured.pop(0)
                continue
            try:
                # with include_raw: a dict of the raw message and what was parsed of it
                answer = cast("dict[str, Any]", constrained.invoke(messages))
            except LocalModelError:
                raise
            except Exception as err:
                if _unreachable(err):
                    raise
                self.structured.pop(0)  # the server refused this way of constraining: the next one from now on
                continue
            # A tool call's arguments arrive parsed, with no text; a JSON-schema answer is the message's text.
            parsed = answer.get("parsed")
            return json.dumps(parsed) if isinstance(parsed, dict) else message_text(answer["raw"])
        return message_text(self.model.invoke(messages))

    def _finish(self, plan: Plan, base: Plan, wanted: list[str]) -> Plan:
        """The model's steps in the deterministic plan, which keeps what it knew (confidences, notes on low
        confidence and missing weights, the parts of the request it could not place); the policy orders the steps
        when the user stated no order, and a note names any task the model left out."""
        confidence = {step.task: step.confidence for step in base.steps}
        for step in plan.steps:
            step.confidence = confidence.get(step.task)
        order, policy_version = plan.order, None
        if base.order == "policy" and len(plan.steps) > 1:
            ranked, _ = self.fallback.policy.order([step.task for step in plan.steps])
            plan.steps.sort(key=lambda step: ranked.index(step.task))
            order, policy_version = "policy", base.policy_version
        found_by = "detector" if base.source == "detector" else "selector"
        left_out = [task for task in wanted if task not in {step.task for step in plan.steps}]
        notes = [*base.notes, *(f"{self.name} left out {task}, which the {found_by} found in the request"
                                for task in left_out), f"planned by {self.name}"]
        return base.model_copy(update={"steps": plan.steps, "source": "llm", "order": order,
                                       "policy_version": policy_version, "notes": notes})


def candidates(plugins: Iterable[PluginStatus], base: Plan) -> dict[str, PluginStatus]:
    """The plugins the model may choose from: the ones the deterministic plan chose, then every other runnable
    plugin for the same tasks (a plugin that cannot run is offered only when the deterministic plan chose it)."""
    wanted = {step.task for step in base.steps}
    chosen = [step.plugin for step in base.steps]
    enabled = {status.id: status for status in plugins if status.enabled}
    offered = {plugin_id: enabled[plugin_id] for plugin_id in chosen if plugin_id in enabled}
    for plugin_id, status in enabled.items():
        if status.runnable and wanted & set(status.manifest.tasks):
            offered.setdefault(plugin_id, status)
    return offered


def system_prompt(known: dict[str, PluginManifest], wanted: list[str], policy: OrderPolicy,
                  amounts: bool = True) -> str:
    """The instructions for the model, from the task catalogue and the order policy: the plugins it may use (with
    their options when the request states an amount), the tasks the request most likely needs, and the policy's
    rules between those tasks."""
    listing = []
    for plugin_id, manifest in known.items():
        options = plugin_options(manifest) if amounts else {}
        said = "; options: " + ", ".join(f"{name} (default {value!r})" for name, value in options.items())
        listing.append(f"- {plugin_id}: {', '.join(t for t in manifest.tasks if t in wanted)} - {manifest.name}"
                       + (said if options else ""))
    rules = [f"- {rule}" for rule in order_rules(policy, wanted)] or ["- none between these tasks"]
    form = ('{"plugin": "<plugin id>", "params": {}, "mix": 1.0, "reason": "<why, in a few words>"}' if amounts
            else '{"plugin": "<plugin id>", "reason": "<why, in a few words>"}')
    return SYSTEM.format(form=form, options="; options" if amounts else "", plugins="\n".join(listing),
                         tasks=", ".join(describe(task) for task in wanted), rules="\n".join(rules),
                         amounts=AMOUNTS if amounts else "")


def order_rules(policy: OrderPolicy, tasks: Iterable[str]) -> list[str]:
    """The policy's rules between `tasks`, each as "first before then: reason", restoration before adjustments
    included, exactly as `OrderPolicy.order` applies them."""
    present = list(dict.fromkeys(tasks))
    rules = [f"{r.first} before {r.then}: {r.reason}" for r in policy.rules if r.first in present and r.then in present]
    if policy.adjustments_last:
        rules += [f"{first} before {then}: restoration runs before adjustments" for first in present
                  if first in RESTORATION for then in present if then not in RESTORATION]
    return rules


def plugin_options(manifest: PluginManifest) -> dict[str, Any]:
    """The options a plugin's manifest declares, with their defaults: the ones a model may set."""
    return dict(kind_for(manifest).options(manifest))


def plan_schema(known: dict[str, PluginManifest], max_steps: int, amounts: bool = True) -> dict[str, Any]:
    """The JSON schema of an answer: steps whose plugin is one of `known`, with only that plugin's options (and
    a `mix`) when the request states an amount, and a short reason."""
    steps = []
    for plugin_id, manifest in known.items():
        properties: dict[str, Any] = {"plugin": {"enum": [plugin_id]}}
        if amounts:
            properties["params"] = {"type": "object", "additionalProperties": False,
                                    "properties": {name: {"type": _json_type(value)}
                                                   for name, value in plugin_options(manifest).items()}}
            properties["mix"] = {"type": "number"}
        properties["reason"] = {"type": "string", "maxLength": REASON_CHARS}
        steps.append({"type": "object", "properties": properties, "required": list(properties),
                      "additionalProperties": False})
    return {
        "title": "plan", "description": "An ordered list of photo-editing steps.", "type": "object",
        "properties": {"steps": {"type": "array", "items": steps[0] if len(steps) == 1 else {"anyOf": steps},
                                 "minItems": 1, "maxItems": max(max_steps, 1)}},
        "required": ["steps"], "additionalProperties": False,
    }


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "integer" if isinstance(value, int) else "number" if isinstance(value, float) else "string"


def _unreachable(err: BaseException) -> bool:
    """A connection that failed or timed out: asking again without a schema would only wait again."""
    return isinstance(err, (ConnectionError, TimeoutError)) or any(
        word in cls.__name__ for cls in type(err).__mro__ for word in ("Connect", "Timeout"))


def parse_plan(reply: str, request: str, known: dict[str, PluginManifest], wanted: set[str]) -> Plan:
    """The plan in a model's reply; `ValueError` says what is wrong with it. `known` is the plugins the model was
    offered (id -> manifest), `wanted` the candidate tasks."""
    match = re.search(r"\{.*\}", reply, re.DOTALL)
    if not match:
        raise ValueError("no JSON object in the answer")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON ({err.msg})") from None
    raw_steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(raw_steps, list):
        raise ValueError('the object has no "steps" list')
    steps: list[Step] = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or not isinstance(raw.get("plugin"), str):
            raise ValueError(f'step {number} has no "plugin" id')
        manifest = known.get(raw["plugin"])
        if manifest is None:
            raise ValueError(f"step {number}: '{raw['plugin']}' is not one of the plugins offered "
                             f"({', '.join(known) or 'none'})")
        task = next((t for t in manifest.tasks if t in wanted), None)
        if task is None:
            raise ValueError(f"step {number}: {raw['plugin']} does none of the tasks asked for "
                             f"({', '.join(sorted(wanted)) or 'none'})")
        if any(step.task == task for step in steps):
            raise ValueError(f"step {number} repeats {task}")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f'step {number}: "params" must be an object')
        _check_params(params, plugin_options(manifest), f"step {number} ({raw['plugin']})")
        mix = raw.get("mix")
        try:
            steps.append(Step(plugin=raw["plugin"], task=task, params=params, mix=1.0 if mix is None else mix,
                              reason=str(raw.get("reason") or "planned by the LLM")))
        except ValidationError as err:
            error = err.errors()[0]
            raise ValueError(f"step {number}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
    if not steps and wanted:
        raise ValueError("no steps, but the request asks for " + ", ".join(sorted(wanted)))
    return Plan(request=request, steps=steps, source="llm", order="single" if len(steps) == 1 else "user")


def _check_params(params: dict[str, Any], options: dict[str, Any], where: str) -> None:
    """Only options the manifest declares, each of its default's type (a number for a number). Their range is
    the plugin's to check when it runs, as for a plan a user wrote."""
    for name, value in params.items():
        if name not in options:
            takes = f"its options are {', '.join(options)}" if options else "it takes no options"
            raise ValueError(f"{where}: unknown option '{name}'; {takes}")
        expected = _json_type(options[name])
        actual = _json_type(value) if isinstance(value, (bool, int, float, str)) else type(value).__name__
        if actual != expected and not (expected == "number" and actual == "integer"):
            raise ValueError(f"{where}: option '{name}' must be a {expected}, not {shown(value)}")


def message_text(message: object) -> str:
    """The text of a chat message (or of a plain string), content blocks joined."""
    content = getattr(message, "content", message)
    if isinstance(content, list):  # content blocks
        content = "".join(block.get("text", "") if isinstance(block, dict) else str(block) for block in content)
    return str(content)
