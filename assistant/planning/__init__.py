"""From a request to an ordered plan of plugin calls: plan data, the order policy, the planners."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from assistant.planning.plan import Plan, PlanError, Step
from assistant.planning.providers import load_chat_model

if TYPE_CHECKING:  # the executor, planners and registry load when they are used
    import threading

    import PIL.Image

    from assistant.executor import Alternatives, Executor, RunResult, StepOutcome
    from assistant.planning.llm import LLMPlanner
    from assistant.planning.planner import Planner
    from plugins.progress import Progress
    from registry.store import Registry

__all__ = ["Plan", "PlanError", "Step", "load_planner", "run_plan"]


def load_planner(registry: Registry | None = None, llm: str | None = None,
                 llm_timeout: float | None = None) -> Planner | LLMPlanner:
    """The deterministic planner over the enabled plugins of `registry` (None: the data folder's), with the shipped
    selector and policy; with `llm` (a model spec, see `planning/providers.py`), the LLM planner in front of it,
    whose model gets `llm_timeout` seconds per answer (None: `providers.DEFAULT_TIMEOUT_S`)."""
    from assistant.paths import open_registry
    from assistant.planning.planner import Planner
    from assistant.planning.policy import OrderPolicy
    from assistant.selector import load_selector

    store = registry if registry is not None else open_registry()
    planner = Planner(store, load_selector(store), OrderPolicy.load())
    if not llm:
        return planner
    from assistant.planning.llm import LLMPlanner

    return LLMPlanner(load_chat_model(llm, llm_timeout), planner, name=llm)


def run_plan(plan: Plan, image: PIL.Image.Image, registry: Registry, executor: Executor,
             progress: Progress | None = None, cancel: threading.Event | None = None) -> RunResult:
    """Run `plan` on `image` through `executor` (an `assistant.executor.RunResult` comes back). Records in the
    plan diffplugin's and the plugins' versions and, when the judge was on, what it tried for each step and what
    was kept: the plan then holds the steps as they ran (another plugin or a milder mix, dropped steps gone)."""
    from assistant import __version__
    from assistant.executor import ExecutorError, check_options

    if not plan.steps:
        raise ExecutorError("the plan has no steps: nothing to do" + (f" ({plan.notes[-1]})" if plan.notes else ""))
    loaded = [executor.load(step.plugin, registry, folders=False) for step in plan.steps]
    for number, (step, plugin) in enumerate(zip(plan.steps, loaded, strict=True), start=1):
        check_options(plugin, step.params, f"step {number} ({step.plugin})")
    plan.versions = {"diffplugin": __version__}
    for step, plugin in zip(plan.steps, loaded, strict=True):
        manifest = getattr(plugin, "manifest", None)
        plan.versions[step.plugin] = manifest.version if manifest else "folder"
    result = executor.run(image, loaded, [step.params for step in plan.steps], progress=progress, cancel=cancel,
                          mixes=[step.mix for step in plan.steps], names=[step.plugin for step in plan.steps],
                          alternatives=_alternatives(plan, registry, executor))
    plan.notes.extend(result.notes)
    if result.outcomes:
        plan.steps = _as_ran(plan, result.outcomes, registry)
    return result


def _alternatives(plan: Plan, registry: Registry, executor: Executor) -> Alternatives:
    """For step i: the other enabled plugins for its task that can run here (built-in, diffusion with weights,
    community), loaded only when the judge tries them."""
    from assistant.executor import Alternative
    from registry.errors import RegistryError
    from registry.runtime import runnable_status

    def others(index: int) -> list[Alternative]:
        step = plan.steps[index]
        found: list[Alternative] = []
        for status in registry.plugins():
            if status.id == step.plugin or step.task not in status.manifest.tasks:
                continue
            try:
                runnable_status(registry, status.id)
            except RegistryError:  # disabled, untrusted or without weights: not an alternative here
                continue
            found.append(Alternative(status.id, functools.partial(executor.load, status.id, registry, folders=False)))
        return found

    return others


def _as_ran(plan: Plan, outcomes: list[StepOutcome], registry: Registry) -> list[Step]:
    steps = []
    for outcome in outcomes:
        step = plan.steps[outcome.index].model_copy()
        step.tries = list(outcome.tries)
        if outcome.plugin is None:
            plan.dropped.append(step)
            continue
        if outcome.plugin != step.plugin:  # another plugin for the task: its own defaults, not the first one's
            step.plugin, step.params = outcome.plugin, {}
            plan.versions[outcome.plugin] = registry.get(outcome.plugin).active.version
        step.params = {**step.params, **outcome.overrides}  # a kept preset's options, so that `run` replays it
        step.mix = outcome.mix
        steps.append(step)
    return steps
