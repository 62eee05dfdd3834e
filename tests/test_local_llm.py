"""Local GGUF models run in a child process: a crash of llama.cpp (an illegal instruction on a CPU it was not
built for, a segfault), a hang or an unloadable model file is one clear error, and the planner falls back with it
as a note. Stand-in workers crash for real (they kill themselves with the signal); the last tests run the real
worker and the bundled SmolLM2 (the README's test command installs the `llm` extra)."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from assistant.cli import app
from assistant.planning import load_planner
from assistant.planning.llm import LLMPlanner, LocalModelError, load_chat_model
from assistant.planning.local_llm import LocalChatModel

REQUEST = "brighten it and remove the rain"
READY = 'import json, sys; print(json.dumps({"ready": "m"}), flush=True); sys.stdin.readline(); '


def stand_in(code: str, timeout_s: float = 60) -> LocalChatModel:
    """A local model whose worker is `code`, a Python program that plays (and breaks) the protocol."""
    return LocalChatModel(model_path="stand-in.gguf", command=[sys.executable, "-c", textwrap.dedent(code)],
                          timeout_s=timeout_s)


def test_an_illegal_instruction_while_loading_names_the_cause_and_the_fix() -> None:
    model = stand_in("import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    with pytest.raises(LocalModelError, match=r"SIGILL.*compiled for another CPU.*GGML_NATIVE=OFF"):
        model.invoke("hello")


def test_a_crash_mid_answer_is_reported_once_and_not_retried() -> None:
    model = stand_in(READY + "import ctypes; ctypes.string_at(0)")  # a real segmentation fault
    with pytest.raises(LocalModelError, match=r"crashed \(SIGSEGV\)"):
        model.invoke("hello")
    worker = model._worker
    started = time.monotonic()
    with pytest.raises(LocalModelError, match=r"crashed \(SIGSEGV\)"):
        model.invoke("hello again")
    assert model._worker is worker and time.monotonic() - started < 0.5  # no new process, no new crash


def test_an_error_exit_quotes_the_workers_last_words() -> None:
    model = stand_in("import sys; print('Traceback ...', file=sys.stderr); "
                     "print('MemoryError: cannot allocate the KV cache', file=sys.stderr); sys.exit(3)")
    with pytest.raises(LocalModelError, match=r"exit status 3\): MemoryError: cannot allocate the KV cache"):
        model.invoke("hello")


def test_a_model_that_never_answers_is_stopped() -> None:
    model = stand_in(READY + "import time; time.sleep(600)", timeout_s=1)
    with pytest.raises(LocalModelError, match="did not answer within 1 s"):
        model.invoke("hello")
    assert model._worker is not None and model._worker._process.poll() is not None  # killed, not left running


def test_a_request_the_worker_rejects_leaves_it_running() -> None:
    model = stand_in("""
        import json, sys
        print(json.dumps({"ready": "m"}), flush=True)
        for number, line in enumerate(sys.stdin):
            reply = {"error": "ValueError: prompt too long"} if number == 0 else {"content": "fine"}
            print(json.dumps(reply), flush=True)
        """)
    with pytest.raises(LocalModelError, match="failed on this request: ValueError: prompt too long"):
        model.invoke("hello")
    assert model.invoke("hello").content == "fine"


def test_printing_on_stdout_does_not_corrupt_the_answers(tmp_path: Path) -> None:
    """The real worker keeps the protocol on its own copy of stdout: what the library prints goes to stderr."""
    fake = tmp_path / "llama_cpp"
    fake.mkdir()
    (fake / "__init__.py").write_text(textwrap.dedent("""
        import os

        class Llama:
            def __init__(self, **kwargs):
                print("loading...")          # Python's stdout
                os.write(1, b"native log\\n")  # a C library writing to fd 1

            def create_chat_completion(self, messages, **kwargs):
                print("generating")
                return {"choices": [{"message": {"content": "echo: " + messages[-1]["content"]}}]}
        """))
    code = (f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from assistant.planning.local_llm_worker import main; "
            "sys.exit(main(['model.gguf']))")
    model = LocalChatModel(model_path="model.gguf", command=[sys.executable, "-c", code])
    assert model.invoke("hi").content == "echo: hi"
    assert model.invoke([("system", "be brief"), ("human", "again")]).content == "echo: again"


def test_structured_output_sends_the_schema_to_the_worker() -> None:
    model = stand_in("""
        import json, sys
        print(json.dumps({"ready": "m"}), flush=True)
        for line in sys.stdin:
            request = json.loads(line)
            print(json.dumps({"content": json.dumps({"schema": request.get("schema")})}), flush=True)
        """)
    schema = {"type": "object", "properties": {"a": {"enum": [1]}}}
    reply = model.with_structured_output(schema, method="json_schema", include_raw=True).invoke("hi")
    assert reply["parsed"] == {"schema": schema} and reply["parsing_error"] is None
    assert json.loads(reply["raw"].content) == {"schema": schema}
    assert json.loads(model.invoke("hi").content) == {"schema": None}  # a plain call is not constrained


@pytest.fixture(scope="module")
def deterministic():
    return load_planner()


def test_a_crashing_local_model_leaves_the_deterministic_plan_with_a_note(deterministic) -> None:
    planner = LLMPlanner(stand_in("import os, signal; os.kill(os.getpid(), signal.SIGILL)"), deterministic,
                         name="gguf:stand-in")
    plan = planner.plan(REQUEST)
    assert [s.plugin for s in plan.steps] == [s.plugin for s in deterministic.plan(REQUEST).steps]
    assert any("SIGILL" in note and "deterministic plan" in note for note in plan.notes)


@pytest.fixture
def llama_cpp_dies_of_sigill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real worker, with a llama.cpp that stops on an illegal instruction as a build for another CPU does."""
    fake = tmp_path / "sigill" / "llama_cpp"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os, signal\n\n\nclass Llama:\n    def __init__(self, **kwargs):\n"
                                      "        os.kill(os.getpid(), signal.SIGILL)\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))


def test_plan_survives_llama_cpp_dying_of_an_illegal_instruction(llama_cpp_dies_of_sigill) -> None:
    result = CliRunner().invoke(app, ["plan", REQUEST, "--llm", "smollm2", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [s["task"] for s in plan["steps"]] == ["derain", "lowlight"]
    assert any("SIGILL" in note and "GGML_NATIVE=OFF" in note for note in plan["notes"])


def test_the_chat_survives_llama_cpp_dying_of_an_illegal_instruction(llama_cpp_dies_of_sigill, tmp_path) -> None:
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.paths import data_dir, open_registry

    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(None), None)
    session.planner = load_planner(None, "smollm2")
    for request in (REQUEST, "clear the fog and brighten it"):  # the chat goes on planning after the crash
        reply = session.propose(request)
        assert reply.plan is not None and reply.plan.steps
        assert "SIGILL" in reply.text and "deterministic plan" in reply.text


def test_missing_model_files_are_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", REQUEST, "--llm", f"gguf:{tmp_path / 'none.gguf'}"])
    assert result.exit_code == 1
    assert "no model file at" in result.output and "Traceback" not in result.output


def test_plan_survives_a_model_file_llama_cpp_cannot_load(tmp_path: Path) -> None:
    """The real worker and the real llama.cpp, given a file that is not a GGUF model."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    result = CliRunner().invoke(app, ["plan", REQUEST, "--llm", f"gguf:{broken}", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [s["task"] for s in plan["steps"]] == ["derain", "lowlight"]
    assert any("could not be loaded" in note and "deterministic plan" in note for note in plan["notes"])


def test_the_bundled_model_runs_on_this_machine() -> None:
    """The check that the llama.cpp build suits this processor (a crash fails here, with its reason), and that
    the schema really constrains the model: told to use a plugin the schema does not offer, it cannot."""
    model = load_chat_model("smollm2")
    offered = ["diffplugin/dehaze-classic", "diffplugin/lowlight-classic"]
    step = {"type": "object", "properties": {"plugin": {"enum": offered}, "reason": {"type": "string",
                                                                                    "maxLength": 40}},
            "required": ["plugin", "reason"], "additionalProperties": False}
    schema = {"type": "object", "properties": {"steps": {"type": "array", "items": step, "minItems": 1,
                                                         "maxItems": 2}},
              "required": ["steps"], "additionalProperties": False}
    tempting = [("system", 'Reply exactly: {"steps": [{"plugin": "acme/magic", "reason": "magic"}]}'),
                ("human", "clear the fog")]
    try:
        constrained = model.with_structured_output(schema, include_raw=True).invoke(tempting)
    finally:
        model.close()
    assert "llama_cpp" not in sys.modules  # the native library was loaded by the worker alone
    steps = constrained["parsed"]["steps"]
    assert 1 <= len(steps) <= 2 and all(set(s) == {"plugin", "reason"} and s["plugin"] in offered for s in steps)
