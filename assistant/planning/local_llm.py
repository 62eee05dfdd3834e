"""Local GGUF models as a langchain chat model whose llama.cpp runs in a child process.

A llama.cpp build made for another processor stops with an illegal instruction (SIGILL), and a broken model file
can crash it: in-process, either would end `plan`, `edit` or the whole chat. Here the model lives in
`local_llm_worker.py`'s process; if that process dies, times out or cannot load the model, the call raises
`LocalModelError` with a one-line reason, and the LLM planner falls back to the deterministic plan with that
reason as a note. After a crash or a timeout the model stays unavailable (a rebuilt library needs a new process
anyway) instead of crashing again on every request.

`with_structured_output(schema)` works as with langchain's providers: the JSON schema travels to the worker,
where llama.cpp decodes under the grammar it derives from it.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from typing import IO, Any, cast

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, PrivateAttr

from assistant.planning.llm import message_text
from assistant.planning.providers import LocalModelError

REBUILD = ('CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-deps --no-cache-dir '
           "llama-cpp-python")
ROLES = {"system": "system", "human": "user", "ai": "assistant"}


class LocalChatModel(BaseChatModel):
    """A GGUF chat model run by llama.cpp in its own process. The process starts with the first call, or earlier
    with `start()` so that the model loads while the caller does other work."""

    model_path: str
    max_tokens: int = 256
    timeout_s: float = 120.0
    # The worker's command line; None runs `local_llm_worker` with this interpreter. Tests replace it.
    command: list[str] | None = None

    _worker: WorkerProcess | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "diffplugin-local-llama-cpp"

    def start(self) -> LocalChatModel:
        with self._lock:
            if self._worker is None:
                command = self.command or [sys.executable, "-m", "assistant.planning.local_llm_worker",
                                           self.model_path]
                self._worker = WorkerProcess(command, self.model_path, self.timeout_s)
                weakref.finalize(self, self._worker.close)
        return self

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        worker = self.start()._worker
        assert worker is not None
        chat = [{"role": ROLES.get(m.type, "user"), "content": message_text(m)} for m in messages]
        request: dict[str, object] = {"messages": chat, "max_tokens": self.max_tokens, "stop": stop or []}
        if kwargs.get("json_schema"):
            request["schema"] = kwargs["json_schema"]
        text = worker.ask(request)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def with_structured_output(self, schema: dict[str, Any] | type, *, include_raw: bool = False,
                               **kwargs: Any) -> Runnable[Any, Any]:
        """Answers constrained to the JSON `schema` by llama.cpp's grammar, as langchain's providers do with
        `method="json_schema"`: parsed JSON, or with `include_raw` a dict of `raw` (the message), `parsed` (its
        JSON, None if it does not parse) and `parsing_error`."""
        if not isinstance(schema, dict):
            schema = cast("type[BaseModel]", schema).model_json_schema()  # a pydantic model class
        bound = self.bind(json_schema=schema)
        if not include_raw:
            return bound | JsonOutputParser()
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | JsonOutputParser(), parsing_error=lambda _: None)
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=bound) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")


class WorkerProcess:
    """The child process and its two pipes: one request at a time, each answered within `timeout_s`."""

    def __init__(self, command: list[str], model: str, timeout_s: float) -> None:
        self.model, self.timeout_s = model, timeout_s
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        self._replies: queue.Queue[str | None] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=40)
        assert self._process.stdout is not None and self._process.stderr is not None
        _pump(self._process.stdout, self._replies.put)
        def keep(line: str | None) -> None:  # the last lines of stderr, for the error that names them
            if line is not None:
                self._stderr.append(line.rstrip())

        _pump(self._process.stderr, keep)
        self._ready = False
        self._failure: LocalModelError | None = None
        self._lock = threading.Lock()

    def ask(self, request: dict[str, object]) -> str:
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if not self._ready:
                self._reply()
                self._ready = True
            assert self._process.stdin is not None
            try:
                self._process.stdin.write(json.dumps(request) + "\n")
                self._process.stdin.flush()
            except OSError:  # a broken pipe: the worker is gone
                raise self._fail(self._exit_reason()) from None
            return self._reply()

    def _reply(self) -> str:
        try:
            line = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            raise self._fail(f"the local model did not answer within {self.timeout_s:g} s") from None
        if line is None:
            raise self._fail(self._exit_reason())
        message = json.loads(line)
        if "error" not in message:
            return str(message.get("content", message.get("ready", "")))
        if not self._ready:
            raise self._fail(f"the local model {self.model} could not be loaded: {message['error']}")
        raise LocalModelError(f"the local model failed on this request: {message['error']}")

    def _fail(self, reason: str) -> LocalModelError:
        """The worker is unusable from now on: stop it, and give every later call the same reason."""
        self._failure = LocalModelError(reason)
        self.close()
        return self._failure

    def _exit_reason(self) -> str:
        try:
            code = self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # stdout closed but the process lingers
            self._process.kill()
            code = self._process.wait()
        return describe_exit(code, list(self._stderr))

    def close(self) -> None:
        if self._failure is None:
            self._failure = LocalModelError("the local model was closed")
        if self._process.poll() is None:
            if self._process.stdin is not None:
                with contextlib.suppress(OSError):
                    self._process.stdin.close()  # the worker exits when its stdin closes
            try:
                self._process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def describe_exit(code: int, stderr: list[str]) -> str:
    """One line on why the worker ended: its signal or exit status, with the advice that fits."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGILL:
            return ("the local model crashed: llama.cpp ran an instruction this processor does not have (SIGILL), "
                    f"so it was compiled for another CPU; rebuild it for any x86-64 CPU with: {REBUILD}")
        return f"the local model crashed ({name}) in llama.cpp"
    last = next((line for line in reversed(stderr) if line.strip()), "")
    return f"the local model stopped (exit status {code})" + (f": {last[:200]}" if last else "")


def _pump(stream: IO[str], put: Callable[[str | None], object]) -> None:
    """Read `stream` line by line in a daemon thread; None marks its end."""

    def run() -> None:
        for line in stream:
            put(line)
        put(None)

    threading.Thread(target=run, daemon=True).start()
