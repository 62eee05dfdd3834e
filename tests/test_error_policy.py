"""One error policy for the CLI, the chat and batch: the user's mistake is one line and exit status 1; a bug says
it is one, exits 70, and leaves its traceback in the data folder's log, which --debug (or DIFFPLUGIN_DEBUG=1)
also prints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from typer.testing import CliRunner

import assistant.executor
from assistant.cli import app
from assistant.error_report import INTERNAL_EXIT, describe, log_file, set_debug
from plugins.errors import BadInput, DiffPluginError, FileInTheWay, MissingFile
from registry.errors import CannotHelp, RegistryError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("DIFFPLUGIN_DEBUG", raising=False)
    yield
    set_debug(False)  # --debug is process-wide; the next test starts without it


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def save_photo(path: Path, size: tuple[int, int] = (30, 20)) -> Path:
    PIL.Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def bug_in_the_executor(monkeypatch: pytest.MonkeyPatch, error: Exception, size: tuple[int, int] | None = None) -> None:
    """Every step's result check (deep in the edit path) raises `error`: for results of `size` only, if given. A
    ValueError there is the case the old policy showed as the user's mistake."""
    check = assistant.executor.check_size

    def broken(image: PIL.Image.Image, where: str) -> None:
        if size is None or image.size == size:
            raise error
        check(image, where)

    monkeypatch.setattr(assistant.executor, "check_size", broken)


def apply_args(tmp_path: Path) -> list[object]:
    return ["apply", save_photo(tmp_path / "in.png"), "-p", "diffplugin/exposure", "-o", tmp_path / "out.png"]


def test_the_user_errors_are_still_the_builtin_errors_callers_catch() -> None:
    assert issubclass(BadInput, ValueError) and issubclass(MissingFile, FileNotFoundError)
    assert issubclass(FileInTheWay, FileExistsError) and issubclass(RegistryError, DiffPluginError)
    assert not issubclass(CannotHelp, DiffPluginError)  # a plugin's honest "cannot help", not a failure
    assert str(MissingFile("x: no such folder")) == "x: no such folder"


def test_a_user_error_is_one_line_and_exit_status_1(tmp_path: Path) -> None:
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    result = invoke("apply", broken, "-p", "diffplugin/exposure", "-o", tmp_path / "out.png")
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {broken}: not a readable image (")
    assert not log_file().exists()  # nothing to debug
    as_json = invoke("data", "synth", tmp_path, "-o", tmp_path / "x", "--degradations", "fog", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout) == {
        "error": "unknown degradation 'fog'; valid names: haze, rain, snow, blur, lowlight, noise, jpeg",
        "type": "BadInput", "internal": False}


def test_an_internal_error_says_it_is_a_bug_and_logs_its_traceback(tmp_path: Path, monkeypatch) -> None:
    bug_in_the_executor(monkeypatch, ValueError("boom"))
    result = invoke(*apply_args(tmp_path))
    assert result.exit_code == INTERNAL_EXIT == 70
    assert result.stderr.splitlines() == [f"internal error (a bug): ValueError: boom; details in {log_file()}; "
                                          "rerun with --debug to see them"]
    assert "Traceback" not in result.output and not (tmp_path / "out.png").exists()
    log = log_file().read_text()
    assert "Traceback (most recent call last)" in log and "in broken" in log and "ValueError: boom" in log

    bug_in_the_executor(monkeypatch, KeyError("step"))
    as_json = invoke(*apply_args(tmp_path), "--json")
    assert as_json.exit_code == 70
    assert json.loads(as_json.stdout) == {"error": "'step'", "type": "KeyError", "internal": True,
                                          "log": str(log_file())}
    assert log_file().read_text().count("Traceback (most recent call last)") == 2  # appended


@pytest.mark.parametrize("switch", ["--debug", "DIFFPLUGIN_DEBUG"])
def test_debug_prints_the_traceback(switch: str, tmp_path: Path, monkeypatch) -> None:
    bug_in_the_executor(monkeypatch, ValueError("boom"))
    if switch == "--debug":
        result = invoke("--debug", *apply_args(tmp_path))
    else:
        monkeypatch.setenv("DIFFPLUGIN_DEBUG", "1")
        result = invoke(*apply_args(tmp_path))
    assert result.exit_code == 70
    assert "Traceback (most recent call last)" in result.stderr and "in broken" in result.stderr
    assert result.stderr.splitlines()[-1] == f"internal error (a bug): ValueError: boom; details in {log_file()}"


def test_a_user_error_prints_no_traceback_even_with_debug(tmp_path: Path) -> None:
    result = invoke("--debug", "apply", tmp_path / "missing.png", "-p", "diffplugin/exposure", "-o",
                    tmp_path / "out.png")
    assert result.exit_code == 1 and result.stderr.splitlines() == [f"error: {tmp_path / 'missing.png'}: no such photo"]


def test_a_user_error_keeps_every_line_a_bug_only_its_first() -> None:
    # A user error may list every problem at once (all the bad rows of a CSV): shown whole.
    assert describe(BadInput("3 problems:\n  row 2\n  row 5")).line() == "error: 3 problems:\n  row 2\n  row 5"
    assert describe(ValueError("boom\nmore")).message == "boom"


def test_a_file_the_system_refuses_is_not_called_a_bug(tmp_path: Path) -> None:
    failure = describe(PermissionError(13, "Permission denied", str(tmp_path / "out.png")))
    assert not failure.internal and failure.exit_code == 1
    assert failure.line() == f"error: [Errno 13] Permission denied: '{tmp_path / 'out.png'}'"
    assert not log_file().exists()


def test_a_reader_gone_is_left_to_the_root_command() -> None:
    from assistant.cli.common import reported

    # `diffplugin plugins list | head -1`: QuietPipeGroup ends such a command quietly; it is no error to report.
    with pytest.raises(BrokenPipeError), reported(as_json=False):
        raise BrokenPipeError(32, "Broken pipe")


def test_an_unwritable_log_is_said_not_hidden(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "home").write_text("a file where the data folder should be")
    monkeypatch.setenv("DIFFPLUGIN_HOME", str(tmp_path / "home"))
    failure = describe(KeyError("x"))
    assert failure.internal and failure.log is None
    assert failure.line() == ("internal error (a bug): KeyError: 'x'; its details could not be written to a log "
                              "file; rerun with --debug to see them")


def test_batch_reports_a_bug_per_photo_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    from assistant.planning import Plan, Step

    folder = tmp_path / "in"
    folder.mkdir()
    save_photo(folder / "a.png", (30, 20))
    save_photo(folder / "b.png", (31, 20))  # the bug strikes this one
    save_photo(folder / "c.png", (32, 20))
    (folder / "d.jpg").write_bytes(b"not a photo")  # the user's mistake
    plan = Plan(request="brighten", steps=[Step(plugin="diffplugin/exposure", task="exposure")], order="user")
    plan_path = plan.save(tmp_path / "plan.yaml")
    bug_in_the_executor(monkeypatch, ValueError("boom"), size=(31, 20))
    result = invoke("batch", folder, "--plan", plan_path, "-o", tmp_path / "out", "--no-judge", "--json")
    assert result.exit_code == 70, result.output
    report = json.loads(result.stdout)
    assert sorted(Path(d["input"]).name for d in report["done"]) == ["a.png", "c.png"]
    failed = {Path(f["input"]).name: f for f in report["failed"]}
    assert failed["b.png"] == {"input": str(folder / "b.png"), "internal": True, "log": str(log_file()),
                               "error": f"internal error (a bug): ValueError: boom; details in {log_file()}; "
                                        "rerun with --debug to see them"}
    assert set(failed["d.jpg"]) == {"input", "error"}
    assert failed["d.jpg"]["error"].startswith(f"{folder / 'd.jpg'}: not a readable image (")
    assert "ValueError: boom" in log_file().read_text()

    (folder / "b.png").unlink()
    only_the_user = invoke("batch", folder, "--plan", plan_path, "-o", tmp_path / "out", "--no-judge")
    assert only_the_user.exit_code == 1  # d.jpg alone: the user's to fix
    assert f"failed: {folder / 'd.jpg'}: " in only_the_user.stderr and "internal" not in only_the_user.stderr


def test_the_chat_shows_a_bug_as_one_and_carries_on(tmp_path: Path, monkeypatch) -> None:
    from assistant.chat.app import ChatApp
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.paths import data_dir, open_registry
    from tests.test_chat import log_text, ready, say

    photo = save_photo(tmp_path / "photo.png", (64, 48))
    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(), photo)
    bug_in_the_executor(monkeypatch, KeyError("boom"))

    async def scenario() -> None:
        app = ChatApp(session, renderer="unicode")
        async with app.run_test(size=(150, 48)) as pilot:
            screen = app.screen
            await ready(pilot, screen)
            await say(pilot, "/open no-such-photo.jpg")
            await say(pilot, "/add diffplugin/exposure")
            await say(pilot, "/run")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            text = log_text(screen)
            assert "error: no-such-photo.jpg: no such photo" in text
            assert (f"internal error (a bug): KeyError: 'boom'; details in {log_file()}; rerun with --debug to see "
                    "them") in text
            assert "Traceback" not in text
            assert app.is_running and session.current().index == 0
            app.exit()

    asyncio.run(scenario())
    assert "KeyError: 'boom'" in log_file().read_text()
    errors = [m.text for m in session.messages() if m.role == "error"]
    assert len(errors) == 2 and errors[0].startswith("error: ") and errors[1].startswith("internal error (a bug)")
