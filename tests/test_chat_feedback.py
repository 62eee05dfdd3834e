"""The chat never leaves the user guessing: "planning…" until the answer, a word when there is nothing to
continue, no viewer or nothing edited to export, a wrong option refused when it is set, and the plugin browser's
states in the words of `plugins list`. Driven through Textual's Pilot where the screen is what is tested."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import skimage.data
from textual.widgets import LoadingIndicator

from assistant.chat.app import ChatApp, NoViewer
from assistant.chat.chat_screen import ChatScreen
from assistant.chat.session import ChatError
from assistant.chat.store import ConversationStore
from assistant.chat.widgets import MessageLog, PendingReply
from assistant.paths import data_dir
from assistant.planning import Plan, Step
from tests.test_chat import SIZE, log_text, new_session


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "rocket.jpg"
    PIL.Image.fromarray(skimage.data.rocket()).resize((160, 108)).save(path)
    return path


class HeldPlanner:
    """A planner that answers "exposure" when the test lets it (`go`), so the screen can be seen meanwhile."""

    def __init__(self) -> None:
        self.go = threading.Event()

    def plan(self, request: str, image: PIL.Image.Image | None) -> Plan:
        self.go.wait(timeout=30)
        return Plan(request=request, steps=[Step(plugin="diffplugin/exposure", task="exposure", reason="you asked")],
                    source="user", order="single")


@pytest.fixture
def planner(monkeypatch: pytest.MonkeyPatch) -> HeldPlanner:
    """The chat's planner without the selector (seconds to load), answering at once unless a test holds it."""
    held = HeldPlanner()
    held.go.set()
    monkeypatch.setattr("assistant.planning.load_planner", lambda *args, **kwargs: held)
    return held


async def started(pilot) -> ChatScreen:
    screen = pilot.app.screen
    assert isinstance(screen, ChatScreen)
    for _ in range(200):
        if screen.planner_ready.is_set():
            break
        await pilot.pause(0.02)
    await pilot.pause()
    return screen


async def type_in(pilot, text: str) -> None:
    """Send `text` from the chat box without waiting for the answer."""
    prompt = pilot.app.screen.query_one("#prompt")
    prompt.value = text
    prompt.focus()
    await pilot.press("enter")
    await pilot.pause()


async def until(pilot, condition, what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pending_text(screen: ChatScreen) -> str | None:
    pending = screen.query_one(MessageLog).pending()
    if pending is None:
        return None
    assert pending.query(LoadingIndicator), "the wait shows a moving indicator"
    return pending.text


def test_planning_shows_from_the_request_until_the_answer_replaces_it(photo_file: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    held = HeldPlanner()
    loading = threading.Event()

    def slow_load(*args: object, **kwargs: object) -> HeldPlanner:
        loading.wait(timeout=30)
        return held

    monkeypatch.setattr("assistant.planning.load_planner", slow_load)
    session = new_session(photo_file)

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await pilot.pause()
            await type_in(pilot, "make it brighter")
            await until(pilot, lambda: pending_text(screen) is not None, "the wait to show")
            assert "loading the planner" in pending_text(screen)
            *_, request, wait = screen.query_one(MessageLog).children
            assert str(request.render()) == "make it brighter" and isinstance(wait, PendingReply)

            loading.set()  # the planner is ready: the same request is now planned
            await until(pilot, lambda: pending_text(screen) == "planning…", "planning…")
            await type_in(pilot, "/help")  # what is said meanwhile goes above the wait, which stays last
            assert isinstance(screen.query_one(MessageLog).children[-1], PendingReply)

            held.go.set()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert pending_text(screen) is None and not screen.query(PendingReply)
            assert "Here is my plan (1 step)" in log_text(screen) and session.pending is not None
            app.exit()

    asyncio.run(scenario())


def test_a_failed_plan_also_replaces_planning(photo_file: Path, planner: HeldPlanner) -> None:
    session = new_session()  # no photo: a request that names no task can only ask for one

    def refuse(request: str, image: PIL.Image.Image | None) -> Plan:
        raise ChatError("the planner said no")

    planner.plan = refuse  # type: ignore[method-assign]

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot)
            await type_in(pilot, "make it pop")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert pending_text(screen) is None and "error: the planner said no" in log_text(screen)
            app.exit()

    asyncio.run(scenario())


def test_continue_skips_empty_conversations_and_says_when_there_is_nothing_to_continue(
        photo_file: Path, planner: HeldPlanner) -> None:
    from assistant.cli.chat import _session

    store = ConversationStore(data_dir() / "chat")
    fresh = _session(store, None, None, None, True)
    assert fresh.notice and "no earlier conversation" in fresh.notice and not fresh.versions()

    async def scenario() -> None:
        app = ChatApp(fresh, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot)
            assert "There is no earlier conversation to continue, so this is a new one." in log_text(screen)
            app.exit()

    asyncio.run(scenario())
    assert not [m for m in fresh.messages() if "earlier conversation" in m.text]  # said, not kept

    worked_on = new_session(photo_file)
    new_session()  # opened later and closed at once: empty
    assert store.latest().id != worked_on.id
    resumed = _session(store, None, None, None, True)
    assert resumed.id == worked_on.id and resumed.notice is None


def test_view_without_a_viewer_says_so_and_where_the_photo_is(photo_file: Path, planner: HeldPlanner) -> None:
    session = new_session(photo_file)

    def no_viewer(path: Path) -> None:
        raise NoViewer("no display")

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell", viewer=no_viewer)
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot)
            await pilot.press("ctrl+o")
            await pilot.pause()
            file = session.current().file
            assert f"error: no image viewer found (no display); the photo is at {file}" in log_text(screen)
            app.viewer = lambda path: None
            await type_in(pilot, "/view")
            assert f"Opened version 0 in the image viewer: {file}" in log_text(screen)
            app.exit()

    asyncio.run(scenario())


def test_the_system_viewer_needs_a_display_and_an_opener(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from assistant.chat.app import system_viewer

    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(NoViewer, match="no display"):
        system_viewer(tmp_path / "photo.png")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(NoViewer, match="xdg-open is not installed"):
        system_viewer(tmp_path / "photo.png")


def test_export_before_any_edit_says_so_and_writes_nothing(photo_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           planner: HeldPlanner) -> None:
    monkeypatch.chdir(tmp_path)
    session = new_session(photo_file)
    before = photo_file.read_bytes()

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot)
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert (f"error: nothing edited yet, so nothing was saved: your photo is as it was, at "
                    f"{photo_file.resolve()}") in log_text(screen)
            app.exit()

    asyncio.run(scenario())
    assert not list(tmp_path.glob("*-edited*")) and photo_file.read_bytes() == before
    session.add("exposure")
    session.run()
    session.undo()  # back at the photo as it was: the way forward is named
    with pytest.raises(ChatError, match="ctrl\\+y redoes the edit you undid"):
        session.export(tmp_path / "out.png")
    session.redo()
    written, _ = session.export(tmp_path / "out.png")
    assert written[0].is_file() and not np.array_equal(np.asarray(PIL.Image.open(written[0]).convert("RGB")),
                                                       np.asarray(session.original()))


def test_set_refuses_an_option_of_the_wrong_type_naming_step_plugin_and_option(photo_file: Path) -> None:
    session = new_session(photo_file)
    session.add("exposure")
    session.add("diffplugin/denoise")
    session.add("diffplugin/crop")
    session.add("diffplugin/rotate")
    refused = {
        (2, "radius", "abc"): "step 2 (diffplugin/denoise): option 'radius' must be a whole number, not 'abc'",
        (2, "radius", "2.5"): "step 2 (diffplugin/denoise): option 'radius' must be a whole number, not '2.5'",
        (1, "ev", "bright"): "step 1 (diffplugin/exposure): option 'ev' must be a number, not 'bright'",
        (1, "ev", "true"): "step 1 (diffplugin/exposure): option 'ev' must be a number, not 'true'",
        (4, "expand", "2"): "step 4 (diffplugin/rotate): option 'expand' must be true or false, not '2'",
        (2, "radiu", "3"): "step 2 (diffplugin/denoise): unknown option 'radiu'; its options are radius, sigma, "
                           "strength",
    }
    for (number, key, value), message in refused.items():
        with pytest.raises(ChatError) as caught:
            session.set_param(number, key, value)
        assert str(caught.value) == message
    assert all(not step.params for step in session.pending.steps)  # nothing refused was kept

    session.set_param(1, "ev", "1")  # a whole number is a number
    session.set_param(2, "radius", "3")
    session.set_param(3, "aspect", "16:9")  # text stays as typed (YAML would read 16:9 as the number 969)
    session.set_param(4, "expand", "no")
    assert [s.params for s in session.pending.steps] == [{"ev": 1}, {"radius": 3}, {"aspect": "16:9"},
                                                         {"expand": False}]
    session.run()  # what was accepted runs


def test_set_in_the_chat_box_shows_the_refusal(photo_file: Path, planner: HeldPlanner) -> None:
    session = new_session(photo_file)
    session.add("exposure")
    session.add("diffplugin/denoise")

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = await started(pilot)
            await type_in(pilot, "/set 2 radius=abc")
            assert ("error: step 2 (diffplugin/denoise): option 'radius' must be a whole number, not 'abc'"
                    in log_text(screen))
            assert session.pending.steps[1].params == {}
            app.exit()

    asyncio.run(scenario())


def test_the_plugin_browser_names_states_as_plugins_list_does(photo_file: Path, planner: HeldPlanner) -> None:
    from assistant.chat.plugins_screen import PluginsScreen
    from assistant.plugin_status import state_word

    session = new_session(photo_file)
    session.registry.disable("diffplugin/saturation")

    async def scenario() -> dict[str, str]:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await started(pilot)
            await pilot.press("f2")
            await pilot.pause()
            browser = app.screen
            assert isinstance(browser, PluginsScreen)
            table = browser.query_one("#plugins")
            states = {str(table.get_row_at(i)[0]): str(table.get_row_at(i)[3]) for i in range(table.row_count)}
            app.exit()
            return states

    states = asyncio.run(scenario())
    installed = {s.id: state_word(s) for s in session.registry.plugins()}
    assert {pid: states[pid] for pid in installed} == installed
    assert states["diffplugin/saturation"] == "disabled" and states["diffplugin/exposure"] == "ready"
    assert "needs weights" in installed.values()  # the official diffusion plugins, before `models pull`
    assert "problem" not in states.values()
