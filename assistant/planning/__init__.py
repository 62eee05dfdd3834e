"""From a request to an ordered plan of plugin calls: plan data, the order policy, the planners."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from assistant.planning.plan import Plan, PlanError, Step

__all__ = ["Plan", "PlanError", "Step", "load_planner", "run_plan"]


def load_planner(registry: str | Path | None = None, llm: str | None = None) -> Any:
    """The deterministic planner over the registry's enabled plugins, with the shipped selector and policy;
    with `llm` (a model spec, see `planning/llm.py`), the LLM planner in front of it."""
    from assistant.paths import open_registry
    from assistant.planning.planner import Planner
    from assistant.planning.policy import OrderPolicy
    from assistant.selector import load_selector

    store = open_registry(registry)
    planner = Planner(store, load_selector(store=store), OrderPolicy.load())
    if not llm:
        return planner
    from assistant.planning.llm import LLMPlanner, load_chat_model

    return LLMPlanner(load_chat_model(llm), planner, name=llm)


def run_plan(plan: Plan, image: Any, registry: Any, executor: Any, progress: Any = None, cancel: Any = None) -> Any:
    """Run `plan` on `image` through `executor` (an `assistant.executor.RunResult` comes back). Records in the
    plan diffplugin's and the plugins' versions and, when the quality check changed it, the steps as they ran."""
    from assistant import __version__
    from assistant.executor import ExecutorError

    if not plan.steps:
        raise ExecutorError("the plan has no steps: nothing to do" + (f" ({plan.notes[-1]})" if plan.notes else ""))
    loaded = [executor.load(step.plugin, registry) for step in plan.steps]
    plan.versions = {"diffplugin": __version__}
    for step, plugin in zip(plan.steps, loaded, strict=True):
        manifest = getattr(plugin, "manifest", None)
        plan.versions[step.plugin] = manifest.version if manifest else "folder"
    result = executor.run(image, loaded, [step.params for step in plan.steps], progress=progress, cancel=cancel)
    plan.notes.extend(result.notes)
    if result.order != list(range(len(plan.steps))):
        plan.steps = [plan.steps[i] for i in result.order]
        plan.order = "quality-check"
    return result
