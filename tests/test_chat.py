"""The chat, driven through Textual's Pilot: a photo, a two-step request, plan edits, a run, undo and redo,
export, the plugin browser with a trusted install, errors as messages, cancelling, and resuming."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from assistant.chat.app import ChatApp
from assistant.chat.chat_screen import ChatScreen
from assistant.chat.plugins_screen import PluginsScreen
from assistant.chat.session import ChatSession
from assistant.chat.store import ConversationStore
from assistant.chat.widgets import MessageLog, PlanTable
from assistant.paths import data_dir, open_registry
from assistant.planning import Plan
from assistant.planning.policy import OrderPolicy
from tests.plugin_folders import NEGATIVE_MANIFEST, code_folder

SIZE = (150, 48)

SLOW = NEGATIVE_MANIFEST.replace("acme/negative", "acme/slow").replace("[negative]", "[slow]").replace(
    "negative:negative", "slow:slow")


@pytest.fixture
def photo_file(tmp_path: Path) -> Path:
    import skimage.data

    path = tmp_path / "rocket.jpg"
    PIL.Image.fromarray(skimage.data.rocket()).resize((160, 108)).save(path)
    return path


def new_session(photo: Path | None = None, registry: Path | None = None) -> ChatSession:
    return ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(registry), photo)


async def ask_to_install(pilot, app: ChatApp, folder: Path) -> tuple[PluginsScreen, str]:
    """Open the plugin browser (F2), ask it to install `folder`; the browser and the question it asks."""
    await pilot.press("f2")
    await pilot.pause()
    browser = app.screen
    assert isinstance(browser, PluginsScreen)
    path = browser.query_one("#install-path")
    path.value = str(folder)
    path.focus()
    await pilot.press("enter")
    await pilot.pause()
    return browser, str(app.screen.query_one(".question").render())


async def ready(pilot, screen: ChatScreen) -> None:
    """Wait for the planner (the selector loads in a worker) and any running work."""
    for _ in range(600):
        if screen.planner_ready.is_set():
            break
        await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def say(pilot, text: str) -> None:
    prompt = pilot.app.screen.query_one("#prompt")
    prompt.value = text
    prompt.focus()
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def log_text(screen: ChatScreen) -> str:
    return "\n".join(str(child.render()) for child in screen.query_one(MessageLog).children)


def test_a_two_step_edit_by_conversation(photo_file: Path, tmp_path: Path, monkeypatch) -> None:
    from assistant.executor import DiffusionSettings, Executor

    monkeypatch.chdir(tmp_path)
    viewed: list[Path] = []
    session = new_session(photo_file)
    # The chat's mechanics on a clean photo, where the judge would rightly drop both steps (tested below).
    session.executor = Executor(DiffusionSettings(judge=False))
    original = np.asarray(session.original())

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell", viewer=viewed.append)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, ChatScreen)
            await ready(pilot, screen)
            await say(pilot, "clear the fog and make it brighter")
            proposed = [s.task for s in session.pending.steps]
            assert proposed == OrderPolicy.load().order(["dehaze", "lowlight"])[0]
            table = screen.query_one(PlanTable)
            assert table.row_count == 2 and "Here is my plan (2 steps)" in log_text(screen)

            # Edit the plan: move the first step down with the keyboard, then set an option by command.
            table.focus()
            table.move_cursor(row=0)
            await pilot.press("ctrl+down")
            await pilot.pause()
            assert [s.task for s in session.pending.steps] == proposed[::-1]
            dehaze = proposed[::-1].index("dehaze") + 1
            await say(pilot, f"/set {dehaze} strength=0.5")
            assert session.pending.steps[dehaze - 1].params == {"strength": 0.5}
            assert "strength=0.5" in str(table.get_row_at(dehaze - 1))

            await pilot.press("ctrl+r")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            versions = session.versions()
            assert len(versions) == 2 and session.current().index == 1
            assert versions[1].plan["steps"][dehaze - 1]["params"] == {"strength": 0.5}
            edited = np.asarray(session.image())
            assert edited.shape == original.shape and not np.array_equal(edited, original)
            assert session.pending is None and not table.display
            assert screen.query_one("#after").image is not None and "version 1" in screen.sub_title

            await pilot.press("ctrl+z")
            await pilot.pause()
            assert session.current().index == 0 and np.array_equal(np.asarray(session.image()), original)
            await pilot.press("ctrl+y")
            await pilot.pause()
            assert session.current().index == 1

            await pilot.press("ctrl+o")
            assert viewed == [session.current().file]

            await say(pilot, "/export out/rocket-fixed.png")
            assert (tmp_path / "out" / "rocket-fixed.png").is_file()
            replay = Plan.load(tmp_path / "out" / "rocket-fixed.png.plan.yaml")
            assert [s.task for s in replay.steps] == proposed[::-1]
            await pilot.press("ctrl+s")  # default name, beside where the chat runs; never over a file
            await pilot.press("ctrl+s")
            assert (tmp_path / "rocket-edited.png").is_file() and (tmp_path / "rocket-edited-2.png").is_file()
            app.exit()

    asyncio.run(scenario())
    assert np.array_equal(np.asarray(PIL.Image.open(photo_file).convert("RGB")), original)  # the user's photo


def test_errors_are_messages_and_the_chat_carries_on(photo_file: Path, tmp_path: Path) -> None:
    session = new_session(photo_file)

    async def scenario() -> None:
        app = ChatApp(session, renderer="unicode")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await ready(pilot, screen)
            await say(pilot, "/open no-such-photo.jpg")
            await say(pilot, "/remove 3")
            await say(pilot, "/frobnicate")
            await say(pilot, "yes")  # nothing proposed yet: taken as a request, which plans nothing
            await say(pilot, "/undo")
            await say(pilot, "/add nosuch/plugin")
            text = log_text(screen)
            assert "no-such-photo.jpg" in text and "no plan yet" in text and "unknown command /frobnicate" in text
            assert "nothing to undo" in text and "nosuch/plugin" in text
            assert app.is_running and session.current().index == 0
            app.exit()

    asyncio.run(scenario())
    roles = [m.role for m in session.messages()]
    assert roles.count("error") >= 5


def test_plugin_browser_asks_before_a_plugin_takes_over_a_task(photo_file: Path, tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "haze-away")
    manifest = (folder / "diffplugin.yaml").read_text()
    (folder / "diffplugin.yaml").write_text(manifest.replace("acme/negative", "acme/haze-away")
                                            .replace("tasks: [negative]", "tasks: [dehaze]"))
    session = new_session(photo_file, tmp_path / "reg")

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app.screen)
            browser, question = await ask_to_install(pilot, app, folder)
            assert "dehaze: it may be used instead of diffplugin/dehaze" in question, question
            await pilot.press("n")
            await pilot.pause()
            assert "not installed" in str(browser.query_one("#plugin-status").render())
            app.exit()

    asyncio.run(scenario())
    assert all(s.id != "acme/haze-away" for s in session.registry.plugins())


def test_plugin_browser_search_and_trusted_install(photo_file: Path, tmp_path: Path) -> None:
    folder = code_folder(tmp_path / "negative")
    session = new_session(photo_file, tmp_path / "reg")

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            chat = app.screen
            await ready(pilot, chat)
            await pilot.press("f2")
            await pilot.pause()
            browser = app.screen
            assert isinstance(browser, PluginsScreen)
            table = browser.query_one("#plugins")
            assert table.row_count >= 10  # the built-ins and the official ones
            search = browser.query_one("#search")
            search.value = "remove the haze"
            search.focus()
            await pilot.press("enter")
            await app.workers.wait_for_complete()
            await pilot.pause()
            first = str(table.get_row_at(0)[0])
            assert "dehaze" in first, first

            path = browser.query_one("#install-path")
            path.value = str(folder)
            path.focus()
            await pilot.press("enter")
            await pilot.pause()
            assert "runs its own Python code" in str(app.screen.query_one(".question").render())
            await pilot.press("enter")  # the default answer is no: an extra enter never trusts code
            await pilot.pause()
            assert "not installed" in str(browser.query_one("#plugin-status").render())
            path.value = str(folder)
            path.focus()
            await pilot.press("enter")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            assert "installed acme/negative 1.0.0" in str(browser.query_one("#plugin-status").render())
            await pilot.press("escape")
            await ready(pilot, chat)
            assert app.screen is chat and session.planner is not None
            await say(pilot, "invert the colours")
            assert [s.plugin for s in session.pending.steps] == ["acme/negative"]
            await say(pilot, "yes")
            assert session.current().index == 1
            app.exit()

    asyncio.run(scenario())
    assert session.registry.get("acme/negative").trusted


def test_escape_cancels_a_running_edit_and_keeps_the_photo(photo_file: Path, tmp_path: Path) -> None:
    slow = code_folder(tmp_path / "slow", SLOW, "import time\n\n\ndef slow(image):\n    time.sleep(1.0)\n"
                                                "    return image\n")
    session = new_session(photo_file, tmp_path / "reg")
    session.registry.install(slow, trust=True)

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            await ready(pilot, screen)
            session.add("acme/slow")
            session.add("acme/slow")
            screen.refresh_plan()
            await pilot.press("ctrl+r")
            await pilot.pause(0.2)
            await pilot.press("escape")
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert "Cancelled" in log_text(screen)
            assert len(session.versions()) == 1 and screen.cancel_event is None
            app.exit()

    asyncio.run(scenario())


def test_conversations_persist_and_resume(photo_file: Path) -> None:
    session = new_session(photo_file)
    session.say("user", "hello there")
    store = ConversationStore(data_dir() / "chat")
    resumed = ChatSession.resume(store, session.registry, session.id[:6])
    assert [m.text for m in resumed.messages()][-1] == "hello there"
    assert len(resumed.versions()) == 1 and resumed.current().index == 0

    async def scenario() -> None:
        app = ChatApp(resumed, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert "hello there" in log_text(app.screen)
            app.exit()

    asyncio.run(scenario())
    assert store.latest().id == session.id


def test_chat_command_lists_and_refuses_bad_input(photo_file: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from assistant.cli import app

    runner = CliRunner()
    assert json.loads(runner.invoke(app, ["chat", "--list", "--json"]).stdout) == []
    new_session(photo_file)
    listed = json.loads(runner.invoke(app, ["chat", "--list", "--json"]).stdout)
    assert [c["title"] for c in listed] == ["rocket.jpg"]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    for args, message in ((["chat", str(bad)], "not a readable image"),
                          (["chat", "--resume", "nope"], "no conversation"),
                          (["chat", str(photo_file), "--continue"], "not several")):
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
    # A choice outside the listed ones is a usage error, as Click reports it (exit 2), naming the choices.
    result = runner.invoke(app, ["chat", "--preview", "sixel"])
    assert result.exit_code == 2 and "--preview" in result.output and "halfcell" in result.output


def test_keys_can_be_remapped_by_binding_id(photo_file: Path) -> None:
    from assistant.chat.app import keymap_file

    session = new_session(photo_file)
    session.add("exposure")
    session.run()
    keymap_file().write_text("chat.undo: f9\n")

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("ctrl+z")  # no longer undo
            await pilot.pause()
            assert session.current().index == 1
            await pilot.press("f9")
            await pilot.pause()
            assert session.current().index == 0
            app.exit()

    asyncio.run(scenario())


def test_diffusion_plugins_run_in_the_chat_with_denoising_progress(photo_file: Path, tmp_path: Path,
                                                                   tiny_pipe) -> None:
    from assistant.executor import DiffusionSettings, Executor
    from assistant.paths import models_dir
    from registry.store import Registry
    from tests.plugin_folders import diffplugin_folder

    tiny_pipe.save_pretrained(models_dir() / "base")
    Registry(tmp_path / "reg", models_dir=models_dir()).install(diffplugin_folder(tmp_path / "derain", tiny_pipe))
    session = new_session(photo_file, tmp_path / "reg")
    # Random weights make noise, which the judge rightly drops; this test is about the progress shown.
    session.executor = Executor(DiffusionSettings(short_side=32, steps=4, judge=False))
    seen: list[str] = []

    async def scenario() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            label = screen.query_one("#progress-label")
            original_update = label.update
            label.update = lambda text="": (seen.append(str(text)), original_update(text))[1]
            await ready(pilot, screen)
            await say(pilot, "remove the rain streaks")
            assert [s.plugin for s in session.pending.steps] == ["acme/derain-tiny"]
            await say(pilot, "yes")
            assert session.current().index == 1 and session.current().label == "derain"
            app.exit()

    asyncio.run(scenario())
    assert any("denoising step 4/4" in text for text in seen), seen


def test_a_proposed_plan_survives_closing_the_chat(photo_file: Path) -> None:
    session = new_session(photo_file)
    session.add("exposure")
    session.set_param(1, "ev", "0.5")
    resumed = ChatSession.resume(ConversationStore(data_dir() / "chat"), session.registry, session.id)
    assert [s.plugin for s in resumed.pending.steps] == ["diffplugin/exposure"]
    assert resumed.pending.steps[0].params == {"ev": 0.5}
    version, text = resumed.run()
    assert version.index == 1 and "Done: exposure" in text and resumed.pending is None
    again = ChatSession.resume(ConversationStore(data_dir() / "chat"), session.registry, session.id)
    assert again.pending is None and again.current().index == 1


def test_an_option_typed_in_the_chat_is_a_plain_value_never_an_alias_or_a_structure(photo_file: Path) -> None:
    from assistant.chat.session import ChatError

    session = new_session(photo_file)
    session.add("exposure")
    session.set_param(1, "ev", "&a 0.5")  # an anchor alone is harmless
    with pytest.raises(ChatError, match="aliases"):
        session.set_param(1, "ev", "[&a [1, 1], *a, *a]")
    with pytest.raises(ChatError, match="a number, true/false or text"):
        session.set_param(1, "ev", "{a: 1}")
    assert session.pending.steps[0].params == {"ev": 0.5}


def test_export_never_replaces_a_plan_file_beside_the_output(photo_file: Path, tmp_path: Path) -> None:
    from assistant.photo_output import OutputError

    session = new_session(photo_file)
    session.add("exposure")
    session.run()  # at version 0 there is nothing to export (tests/test_chat_feedback.py)
    output = tmp_path / "out.png"
    (tmp_path / "out.png.plan.yaml").write_text("mine\n")
    with pytest.raises(OutputError, match=r"out\.png\.plan\.yaml exists"):
        session.export(output)
    assert not output.exists() and (tmp_path / "out.png.plan.yaml").read_text() == "mine\n"
    written, _ = session.export(output, overwrite=True)
    assert written == [output, tmp_path / "out.png.plan.yaml"]
    assert [s.plugin for s in Plan.load(written[1]).steps] == ["diffplugin/exposure"]


def test_messages_from_many_threads_keep_their_order_numbers(photo_file: Path) -> None:
    import threading

    session = new_session(photo_file)
    before = len(session.messages())

    def talk(n: int) -> None:
        for i in range(40):
            session.say("user", f"{n}-{i}")

    threads = [threading.Thread(target=talk, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(session.messages()) == before + 240


def test_the_chat_says_what_the_judge_tried_and_dropped(photo_file: Path) -> None:
    """Dehazing a clean photo only harms it: the step is dropped, the photo stays as it was, and the reply and
    the version's plan say what was tried."""
    session = new_session(photo_file)
    session.add("diffplugin/dehaze-classic")
    version, text = session.run()
    assert "dehaze skipped: every try made the photo worse (diffplugin/dehaze-classic: worse" in text
    assert np.array_equal(np.asarray(session.image()), np.asarray(session.original()))
    assert [t["verdict"] for t in version.plan["dropped"][0]["tries"]] == ["worse", "worse", "worse"]


def test_the_palette_offers_a_step_for_each_runnable_plugin(photo_file: Path) -> None:
    """The command palette reads the registry off the UI thread when it opens and offers "Add step: ID" for
    every runnable plugin, beside the chat's own actions."""
    from assistant.chat.palette import ACTIONS, ChatCommands

    session = new_session(photo_file)
    runnable = [s.id for s in session.registry.plugins() if s.runnable]

    async def scenario() -> list[str]:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot, app.screen)
            provider = ChatCommands(app.screen)
            await provider.startup()
            return [str(hit.text) async for hit in provider.discover()]

    titles = asyncio.run(scenario())
    assert runnable and [f"Add step: {plugin_id}" for plugin_id in runnable] == titles[len(ACTIONS):]
