"""Regenerate the chat's screenshots in this folder (SVG, from Textual's headless driver).

    PYTHONPATH=. python docs/screenshots/make_screenshots.py

Uses a throwaway data folder, the example photo and the built-in plugins (no weights needed).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PHOTO = HERE.parent.parent / "examples" / "photos" / "rocket-foggy-dusk.jpg"
SIZE = (132, 40)


async def submit(pilot, selector: str, text: str) -> None:
    """Type `text` into the input `selector`, press enter and wait for the work it starts."""
    box = pilot.app.screen.query_one(selector)
    box.value = text
    box.focus()
    await pilot.press("enter")
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def shoot() -> None:
    from assistant.chat.app import ChatApp
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.paths import data_dir, open_registry

    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(), PHOTO)
    app = ChatApp(session, renderer="halfcell")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        while not screen.planner_ready.is_set():
            await pilot.pause(0.05)
        await submit(pilot, "#prompt", "it's a dark foggy night shot, clear the fog and make it brighter")
        app.save_screenshot("chat-plan.svg", str(HERE))
        await pilot.press("ctrl+r")
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.save_screenshot("chat-result.svg", str(HERE))
        await pilot.press("f2")
        await pilot.pause()
        await submit(pilot, "#search", "remove the haze")
        app.save_screenshot("chat-plugins.svg", str(HERE))
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("f1")
        await pilot.pause()
        app.save_screenshot("chat-keys.svg", str(HERE))
        app.exit()


def main() -> None:
    os.environ["DIFFPLUGIN_HOME"] = tempfile.mkdtemp(prefix="chat-screenshots-")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(shoot())
    for svg in sorted(HERE.glob("*.svg")):
        print(f"{svg.name}: {svg.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
