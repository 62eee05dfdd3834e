"""Issue 15: the LLM planner's network providers against real servers that these tests start.

- `openai:MODEL@URL` against llama-cpp-python's own OpenAI-compatible server, running the bundled SmolLM2;
- `ollama:MODEL@URL` against a small stand-in that speaks the Ollama API (`/api/chat`, streamed or not, with
  the `format` field: a JSON schema is answered with an instance of that schema).

A server that answers HTTP 500, a body that is not JSON, an answer that is not a plan, one that is slower than
`--llm-timeout` and a port where nothing listens each end in the deterministic plan with a note naming what went
wrong, never a hang or a crash. The tests hold whichever way `LLMPlanner` asks its model (constrained to a
schema or not): a plan is either the model's, valid, or the deterministic one with a note.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, get_args

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.cli.edit import LLMTimeoutOption
from assistant.planning import Plan, load_planner
from assistant.planning.llm import LLMPlanner
from assistant.planning.providers import DEFAULT_TIMEOUT_S, load_chat_model, smollm2_path

REQUEST = "brighten it and remove the rain"
#: Short, so that the slow-server tests are quick; far longer than the stand-in needs to answer.
TIMEOUT_S = 3.0
#: How long the stand-in stalls in "slow" mode: well past TIMEOUT_S, cut short when the tests end.
STALL_S = 60.0


@pytest.fixture(autouse=True)
def _local_servers_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "not-checked-by-local-servers")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a proxy set for the internet must not catch these


@pytest.fixture(scope="module")
def deterministic() -> Any:
    return load_planner()


def assert_sound(plan: Plan, deterministic: Any, request: str) -> None:
    """The plan is the model's and valid (registered plugins, candidate tasks only), or the deterministic plan
    with a note saying so."""
    expected = deterministic.plan(request)
    if plan.source == "llm":
        known = {status.id: status.manifest for status in deterministic.registry.plugins()}
        assert all(step.plugin in known and step.task in known[step.plugin].tasks for step in plan.steps)
        assert {step.task for step in plan.steps} <= {step.task for step in expected.steps}
    else:
        assert [s.plugin for s in plan.steps] == [s.plugin for s in expected.steps]
        assert any("deterministic plan" in note for note in plan.notes), plan.notes


def fallback_note(plan: Plan) -> str:
    notes = [note for note in plan.notes if "deterministic plan" in note]
    assert plan.source != "llm" and notes, plan.notes
    return notes[-1]


# --------------------------------------------------------------------------- a stand-in Ollama / OpenAI server
def example_of(schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """The simplest value that `schema` accepts: first enum value or alternative, required properties only, the
    fewest items allowed. Enough for the plan schemas a planner sends; a real server decodes by grammar."""
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return example_of(target, root)
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_of(schema[key][0], root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: example_of(properties.get(name, {}), root) for name in schema.get("required", properties)}
    if kind == "array":
        return [example_of(schema.get("items", {}), root) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind in ("number", "integer"):
        low, high = schema.get("minimum", 0), schema.get("maximum", 1)
        return (low + high) / 2 if kind == "number" else int(low)
    if kind == "string":
        return "asked for in the request".ljust(schema.get("minLength", 0), ".")
    return {"boolean": False, "null": None}.get(kind)


class StandIn(ThreadingHTTPServer):
    """Speaks enough of the Ollama API (`/api/chat`, `/api/show`, `/api/tags`, `/api/version`) and of OpenAI's
    (`/v1/chat/completions`, `/v1/models`). `mode` says how it behaves: "answer" (the schema's simplest instance,
    else `reply`), "text" (`reply`, as a server that ignores schemas does), "500", "garbage" (a body that is not
    JSON), or "slow" (no answer at all)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode = "answer"
        self.reply = "I would brighten it."  # the text answered when no schema was asked for
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def content(self, body: dict[str, Any]) -> str:
        if self.mode == "text":
            return self.reply
        schema = body.get("format")  # Ollama: "json" or a JSON schema
        response_format = body.get("response_format") or {}  # OpenAI: {"type": "json_schema", "json_schema": ...}
        if isinstance(response_format.get("json_schema"), dict):
            schema = response_format["json_schema"].get("schema")
        return json.dumps(example_of(schema, schema)) if isinstance(schema, dict) else self.reply


class Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows what the tests assert
        pass

    def do_GET(self) -> None:
        if self.path == "/api/tags":
            self.send({"models": [{"name": "fake-model:latest", "model": "fake-model:latest", "size": 1}]})
        elif self.path == "/api/version":
            self.send({"version": "0.9.0"})
        elif self.path == "/v1/models":
            self.send({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "tests"}]})
        else:
            self.send({"error": f"no route {self.path}"}, status=404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append((self.path, body))
        mode = self.server.mode
        if self.path == "/api/show":
            self.send({"modelfile": "", "parameters": "", "template": "", "details": {"family": "fake"},
                       "model_info": {}, "capabilities": ["completion"]})
            return
        if self.path not in ("/api/chat", "/v1/chat/completions"):
            self.send({"error": f"no route {self.path}"}, status=404)
            return
        if mode == "slow":  # never answers: the client gives up first
            self.server.release.wait(STALL_S)
            self.close_connection = True
            return
        if mode == "500":
            self.send({"error": "the model ran out of memory"}, status=500)
            return
        elif mode == "garbage":
            self.send_raw(b"<html><body>502 Bad Gateway</body></html>\n", "application/json")
            return
        content = self.server.content(body)
        if self.path == "/v1/chat/completions":
            self.send({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model"),
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": content}}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            return
        message = {"model": body.get("model"), "created_at": "2026-01-01T00:00:00Z"}
        done = {**message, "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                "total_duration": 1, "prompt_eval_count": 1, "eval_count": 1}
        if body.get("stream", True):  # Ollama streams by default: one JSON object per line
            lines = [{**message, "message": {"role": "assistant", "content": content}, "done": False}, done]
            self.send_raw(b"".join(json.dumps(line).encode() + b"\n" for line in lines), "application/x-ndjson")
        else:
            self.send({**done, "message": {"role": "assistant", "content": content}})

    def send(self, data: dict[str, Any], status: int = 200) -> None:
        self.send_raw(json.dumps(data).encode(), "application/json", status)

    def send_raw(self, data: bytes, content_type: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()  # stalled answers end now
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake(stand_in: StandIn) -> StandIn:
    stand_in.mode, stand_in.reply = "answer", "I would brighten it."
    stand_in.requests.clear()
    return stand_in


def spec_for(provider: str, url: str) -> str:
    return f"openai:fake-model@{url}/v1" if provider == "openai" else f"ollama:fake-model@{url}"


def plan_with(provider: str, url: str, deterministic: Any, request: str = REQUEST) -> Plan:
    spec = spec_for(provider, url)
    return LLMPlanner(load_chat_model(spec, TIMEOUT_S), deterministic, name=spec).plan(request)


# --------------------------------------------------------------------------- Ollama
def test_ollama_plans_through_the_ollama_api(fake: StandIn, deterministic: Any) -> None:
    plan = plan_with("ollama", fake.url, deterministic)
    chats = [body for path, body in fake.requests if path == "/api/chat"]
    assert chats and all(body["model"] == "fake-model" for body in chats)
    assert any(REQUEST in message["content"] for message in chats[0]["messages"])
    assert_sound(plan, deterministic, REQUEST)
    if any(isinstance(body.get("format"), dict) for body in chats):  # asked for a schema: the answer fits it
        assert plan.source == "llm", plan.notes


def test_ollama_host_comes_from_the_environment(fake: StandIn, deterministic: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    LLMPlanner(load_chat_model("ollama:fake-model", TIMEOUT_S), deterministic, name="ollama").plan(REQUEST)
    assert any(path == "/api/chat" for path, _ in fake.requests)


# --------------------------------------------------------------------------- failures, both network providers
@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_an_http_500_is_a_note(provider: str, fake: StandIn, deterministic: Any) -> None:
    fake.mode = "500"
    note = fallback_note(plan_with(provider, fake.url, deterministic))
    assert "500" in note or "ran out of memory" in note, note


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_a_body_that_is_not_json_is_a_note(provider: str, fake: StandIn, deterministic: Any) -> None:
    fake.mode = "garbage"
    plan = plan_with(provider, fake.url, deterministic)
    fallback_note(plan)
    assert_sound(plan, deterministic, REQUEST)


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_an_answer_that_is_not_a_plan_is_a_note(provider: str, fake: StandIn, deterministic: Any) -> None:
    fake.mode, fake.reply = "text", '{"steps": [{"plugin": "acme/made-up"'  # cut short, a plugin nobody registered
    plan = plan_with(provider, fake.url, deterministic)
    fallback_note(plan)
    assert_sound(plan, deterministic, REQUEST)


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_a_server_slower_than_the_timeout_is_a_note(provider: str, fake: StandIn, deterministic: Any) -> None:
    fake.mode = "slow"
    note = fallback_note(plan_with(provider, fake.url, deterministic))
    assert "time" in note.lower(), note  # "timed out", "ReadTimeout", ...


@pytest.mark.parametrize("provider", ["openai", "ollama"])
def test_nothing_listening_is_a_note(provider: str, deterministic: Any) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, and nothing listens on it now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    plan = plan_with(provider, f"http://127.0.0.1:{port}", deterministic)
    assert "connect" in fallback_note(plan).lower()


def test_the_timeout_is_an_option(fake: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """`plan --llm ... --llm-timeout` (and $DIFFPLUGIN_LLM_TIMEOUT) reach the model: a stalled server costs
    the timeout, then the deterministic plan comes back with the note, exit status 0."""
    fake.mode = "slow"
    for args, env in ((["--llm-timeout", "1"], {}), ([], {"DIFFPLUGIN_LLM_TIMEOUT": "1"})):
        result = CliRunner().invoke(app, ["plan", REQUEST, "--llm", spec_for("ollama", fake.url), *args, "--json"],
                                    env=env)
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        assert plan["source"] != "llm" and any("time" in note.lower() for note in plan["notes"]), plan["notes"]
    refused = CliRunner().invoke(app, ["plan", REQUEST, "--llm", spec_for("ollama", fake.url), "--llm-timeout",
                                       "0"])
    assert refused.exit_code == 1 and "--llm-timeout" in refused.stderr
    assert f"(default: {DEFAULT_TIMEOUT_S:g})" in get_args(LLMTimeoutOption)[1].help


# --------------------------------------------------------------------------- OpenAI: llama-cpp-python's server
@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """llama-cpp-python's OpenAI-compatible server with the bundled SmolLM2, on a free port; its log file."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", smollm2_path(), "--model_alias", "smollm2",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--seed", "0"]
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "NO_PROXY": "127.0.0.1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # loading a 135M model takes seconds; this bounds a broken start
        while True:
            if server.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({server.returncode}):\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server was not ready in 120 s:\n{log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield url, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_openai_plans_through_a_real_openai_compatible_server(llama_server: tuple[str, Path],
                                                              deterministic: Any) -> None:
    """`--llm openai:smollm2@URL/v1` through `load_planner`, against llama-cpp-python's server: the model is
    reached and answers (no "could not be reached" note), and whatever SmolLM2 says, the plan is sound."""
    url, log = llama_server
    planner = load_planner(llm=f"openai:smollm2@{url}/v1", llm_timeout=120)
    planner.model.max_tokens = 256  # as the local worker does: SmolLM2 can ramble, at ~15 tokens/s on a busy CPU
    plan = planner.plan(REQUEST)
    assert not any("could not be reached" in note for note in plan.notes), plan.notes
    assert_sound(plan, deterministic, REQUEST)
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log.read_text()
