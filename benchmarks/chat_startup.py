"""How soon `diffplugin chat PHOTO` shows its first frame, and when it can plan (the selector loads in a worker).

Times, in a fresh process (what a user waits for): importing the app, opening the conversation (store,
registry, the photo copied as version 0), the first frame (the chat screen mounted under Textual's headless
driver) and the planner ready.

    PYTHONPATH=. python benchmarks/chat_startup.py [PHOTO]
"""

from __future__ import annotations

import time

START = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    photo = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/photos/rocket-foggy-dusk.jpg")
    os.environ.setdefault("DIFFPLUGIN_HOME", tempfile.mkdtemp(prefix="chat-startup-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from assistant.chat.app import ChatApp
    from assistant.chat.session import ChatSession
    from assistant.chat.store import ConversationStore
    from assistant.paths import data_dir, open_registry

    imported = time.perf_counter() - START
    session = ChatSession.start(ConversationStore(data_dir() / "chat"), open_registry(), photo)
    opened = time.perf_counter() - START
    times: dict[str, float] = {}

    from assistant.chat.chat_screen import ChatScreen

    load_planner = ChatScreen.load_planner

    def after_first_frame(screen: ChatScreen) -> None:  # the screen starts the planner once it has drawn
        times.setdefault("first_frame_s", time.perf_counter() - START)
        load_planner(screen)

    ChatScreen.load_planner = after_first_frame  # type: ignore[method-assign]

    async def run() -> None:
        app = ChatApp(session, renderer="halfcell")
        async with app.run_test(size=(150, 48)) as pilot:
            await pilot.pause()
            screen = app.screen
            while not screen.planner_ready.is_set():
                await pilot.pause(0.02)
            times["planner_ready_s"] = time.perf_counter() - START
            times["torch_loaded_by_then"] = "torch" in sys.modules
            app.exit()

    asyncio.run(run())
    result = {"import_s": imported, "conversation_open_s": opened, **times}
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
