"""Issue 16, the command line and the chat: manifest text is shown as text (markup and terminal escapes are not
obeyed), a damaged chat database is one line, and a new user's mistakes (no network, no API key, no Ray cluster,
a missing model file, a closed pipe) are one line that says what to do, with nothing written."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import PIL.Image
import pytest
from typer.testing import CliRunner

from assistant.cli import app
from tests.plugin_folders import NEGATIVE_MANIFEST, code_folder

runner = CliRunner()

#: Rich markup that closes a tag never opened, a terminal title change (OSC 0), and a right-to-left override.
HOSTILE_NAME = "Neg \x1b]0;pwned\x07 [red]x\u202e"
HOSTILE_MANIFEST = (NEGATIVE_MANIFEST.replace("license: MIT", 'license: "[/bold]"')
                    .replace("name: Photo negative", f'name: "{HOSTILE_NAME.encode("unicode_escape").decode()}"')
                    .replace("name: Test Author", 'name: "[/i] Mallory"'))


def invoke(*args: object, color: bool = False):
    return runner.invoke(app, [str(a) for a in args], color=color)


def one_line(result) -> str:
    assert result.exit_code == 1, result.output
    red, plain = "\x1b[31m", "\x1b[0m"  # the colour of `error:` when invoked with color=True
    lines = result.stderr.replace(red, "").replace(plain, "").strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def hostile_registry(tmp_path: Path) -> Path:
    registry = tmp_path / "registry"
    folder = code_folder(tmp_path / "negative", HOSTILE_MANIFEST)
    assert invoke("plugins", "--registry", registry, "install", folder, "--trust").exit_code == 0
    return registry


# --------------------------------------------------------------------------- M3, L1: manifest text is text
def test_manifest_markup_and_terminal_escapes_are_shown_not_obeyed(hostile_registry: Path) -> None:
    # color=True: output as on a terminal (Click strips no escape codes then).
    wide = runner.invoke(app, ["plugins", "--registry", str(hostile_registry), "list"], color=True,
                         env={"COLUMNS": "250"})
    listed = wide
    assert listed.exit_code == 0, listed.output
    assert "[/bold]" in listed.stdout and "acme/negative" in listed.stdout

    found = invoke("plugins", "--registry", hostile_registry, "search", "make a negative", "--limit", "1", color=True)
    assert found.exit_code == 0, found.output
    assert "\x1b]" not in found.stdout and "\u202e" not in found.stdout
    assert "Neg \\x1b]0;pwned\\x07 [red]x\\u202e" in found.stdout  # shown, escaped, so the user sees it is odd

    shown = invoke("plugins", "--registry", hostile_registry, "show", "acme/negative", color=True)
    assert shown.exit_code == 0, shown.output
    assert "\x1b]" not in shown.stdout and "\u202e" not in shown.stdout

    # --json is for programs: the text as the manifest has it (JSON escapes control characters itself).
    data = json.loads(invoke("plugins", "--registry", hostile_registry, "list", "--json").stdout)
    mine = next(p for p in data["plugins"] if p["id"] == "acme/negative")
    assert mine["license"] == "[/bold]" and mine["name"] == HOSTILE_NAME


def test_an_error_quoting_a_file_shows_its_control_characters_escaped(tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "bad", NEGATIVE_MANIFEST.replace("tasks: [negative]", 'tasks: ["\\e[2Jx"]'))
    line = one_line(invoke("plugins", "--registry", tmp_path / "registry", "validate", folder, color=True))
    assert "field 'tasks'" in line and "\\x1b[2Jx" in line and "\x1b" not in line


def test_the_chat_shows_markup_from_manifests_and_requests_as_text(hostile_registry: Path, tmp_path: Path) -> None:
    from assistant.chat.app import ChatApp
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.chat.widgets import PlanTable
    from assistant.paths import data_dir, open_registry
    from tests.conftest import photo_array
    from tests.test_chat import ask_to_install

    photo = tmp_path / "cat.png"
    PIL.Image.fromarray(photo_array("chelsea", 96)).save(photo)
    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(hostile_registry), photo)
    second = code_folder(tmp_path / "second", HOSTILE_MANIFEST.replace("acme/negative", "acme/negative-two"))

    async def scenario() -> None:
        chat_app = ChatApp(session, renderer="halfcell")
        async with chat_app.run_test(size=(150, 48)) as pilot:
            chat = chat_app.screen
            for _ in range(600):
                if chat.planner_ready.is_set():
                    break
                await pilot.pause(0.05)
            await chat_app.workers.wait_for_complete()
            prompt = chat.query_one("#prompt")
            prompt.value = "make a [/bold] negative of it [red]"  # the user's words end up in the step's reason
            prompt.focus()
            await pilot.press("enter")
            await chat_app.workers.wait_for_complete()
            await pilot.pause()
            table = chat.query_one(PlanTable)
            if table.row_count == 0:  # a guess: the chat asked about it first, quoting the words; "yes" takes it
                assert session._question is not None
                prompt.value = "yes"
                await pilot.press("enter")
                await chat_app.workers.wait_for_complete()
                await pilot.pause()
            assert table.row_count == 1
            assert "[/bold]" in str(table.get_row_at(0)[4])

            browser, question = await ask_to_install(pilot, chat_app, second)
            assert "[/i] Mallory" in question
            await pilot.press("y")
            await pilot.pause()
            assert "installed acme/negative-two" in str(browser.query_one("#plugin-status").render())
            await pilot.press("escape")
            await pilot.pause()
            chat_app.exit()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- M5: a damaged chat database
def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "random bytes":
        path.write_bytes(os.urandom(6000))
    elif how == "truncated":
        path.write_bytes(data[:50])
    else:  # a zeroed header
        path.write_bytes(bytes(100) + data[100:])


@pytest.mark.parametrize("how", ["random bytes", "truncated", "zeroed header"])
def test_a_damaged_chat_database_is_one_line_and_left_as_it_is(how: str) -> None:
    from assistant.paths import data_dir

    assert invoke("chat", "--list").exit_code == 0  # creates the database
    database = data_dir() / "chat" / "chat.sqlite3"
    _damage(database, how)
    before = database.read_bytes()

    line = one_line(invoke("chat", "--list"))
    assert str(database) in line and "move it aside" in line
    failed = invoke("chat", "--list", "--json")
    assert failed.exit_code == 1
    assert str(database) in json.loads(failed.stdout)["error"]
    assert one_line(invoke("chat", "--continue")) == line
    assert database.read_bytes() == before
    assert sorted(p.name for p in database.parent.iterdir()) == ["chat.sqlite3"]


# --------------------------------------------------------------------------- language models
def test_openai_without_an_api_key_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    class ChatOpenAI:  # the real one raises its client's error from its constructor when no key is set
        def __init__(self, **kwargs: object) -> None:
            made.append(kwargs)
            raise RuntimeError("Missing credentials. Please pass an `api_key`")

    monkeypatch.setitem(sys.modules, "langchain_openai", types.SimpleNamespace(ChatOpenAI=ChatOpenAI))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    line = one_line(invoke("plan", "remove the haze", "--llm", "openai:gpt-4o"))
    assert "OPENAI_API_KEY" in line and made == []


@pytest.mark.parametrize(("spec", "package"), [("openai:gpt-4o", "langchain-openai"),
                                               ("ollama:llama3", "langchain-ollama")])
def test_a_missing_provider_package_is_named(spec: str, package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("langchain_openai", "langchain_ollama"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    line = one_line(invoke("plan", "remove the haze", "--llm", spec))
    assert f"pip install '{package}'" in line and "[llm]" not in line


def test_a_missing_gguf_file_is_one_line(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:  # looked up, not imported: see test_local_llm
        pytest.skip("llama-cpp-python is not installed")
    line = one_line(invoke("plan", "remove the haze", "--llm", f"gguf:{tmp_path / 'none.gguf'}"))
    assert "no model file" in line


# --------------------------------------------------------------------------- Ray
@pytest.mark.parametrize("address", ["auto", "127.0.0.1:1"])
def test_batch_on_a_ray_cluster_that_is_not_there_is_one_line(address: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    photos = tmp_path / "in"
    photos.mkdir()
    PIL.Image.new("RGB", (32, 24), "grey").save(photos / "a.png")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray"))  # no cluster there, whatever runs on this machine
    monkeypatch.setenv("RAY_ADDRESS", address)
    if address != "auto":  # a cluster address where nothing listens: Ray waits for it, so stand in for the wait
        def unreachable(*args: object, **kwargs: object) -> None:
            raise ConnectionError("ray client connection timeout")

        monkeypatch.setattr(ray, "init", unreachable)
    line = one_line(invoke("batch", photos, "make it brighter", "-o", tmp_path / "out", "--executor", "ray"))
    assert f"RAY_ADDRESS={address}" in line and "unset it" in line
    assert not (tmp_path / "out").exists()
    if ray.is_initialized():
        ray.shutdown()


# --------------------------------------------------------------------------- no network
def test_pull_offline_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    # The tests run with HF_HUB_OFFLINE=1, and the default base is not in any cache here.
    line = one_line(invoke("models", "pull", "--models-dir", tmp_path / "models", "--skip-plugins"))
    assert "CompVis/stable-diffusion-v1-4" in line and "HF_HUB_OFFLINE" in line and "--base DIR" in line
    assert not (tmp_path / "models").exists()


def test_pull_with_no_connection_to_the_hub_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    line = one_line(invoke("models", "pull", "--models-dir", tmp_path / "models", "--skip-plugins"))
    assert "no connection to 127.0.0.1" in line and "hf download CompVis/stable-diffusion-v1-4" in line
    assert not (tmp_path / "models").exists()


def test_train_without_the_base_model_is_one_line(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.csv"
    for name in ("a.png", "b.png"):
        PIL.Image.new("RGB", (32, 32), "grey").save(tmp_path / name)
    pairs.write_text("image,conditioning_image\na.png,b.png\n")
    try:
        line = one_line(invoke("train", "plugin", "--data", pairs, "--task", "derain", "-o", tmp_path / "run"))
        missing = one_line(invoke("train", "plugin", "--data", pairs, "--task", "derain", "-o", tmp_path / "run",
                                  "--base", tmp_path / "no-such-base"))
    finally:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    assert "--base CompVis/stable-diffusion-v1-4" in line and "HF_HUB_OFFLINE" in line
    assert "no-such-base: no such folder" in missing
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- a reader that stops early
@pytest.mark.parametrize("args", [["plugins", "list"], ["plugins", "list", "--json"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(args: list[str], tmp_path: Path) -> None:
    # The reader is gone before the command writes, as with `| head -3` on a long listing.
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "assistant.cli", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent)
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# --------------------------------------------------------------------------- L7: the photo limit is the stated one
def test_the_photo_limit_is_the_documented_120_mpx(tmp_path: Path) -> None:
    from plugins.data.photos import MAX_PIXELS, load_photo

    assert MAX_PIXELS == 120_000_000
    below, above = tmp_path / "100mpx.png", tmp_path / "121mpx.png"
    PIL.Image.new("1", (10_000, 10_000)).save(below)  # a few kB on disk; 100 Mpx once opened
    PIL.Image.new("1", (11_000, 11_000)).save(above)
    with pytest.raises(ValueError, match=r"11000x11000 is too large \(121 Mpx; the limit is 120 Mpx\)"):
        load_photo(above)
    assert load_photo(below).size == (10_000, 10_000)  # over Pillow's 89.5 Mpx warning, under ours
