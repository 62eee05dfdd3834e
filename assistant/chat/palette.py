"""Command palette (ctrl+p): the chat's actions, and every runnable plugin as "add a step"."""

from __future__ import annotations

import asyncio
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from assistant.cli.common import printable

#: (title, action on the chat screen, help)
ACTIONS = [
    ("Run the plan", "run_plan", "run the proposed plan on the photo (ctrl+r)"),
    ("Undo", "undo", "back to the previous version (ctrl+z)"),
    ("Redo", "redo", "forward again (ctrl+y)"),
    ("Export photo and plan", "export", "save the current version and the plan that replays it (ctrl+s)"),
    ("Open in image viewer", "view", "the current version, full size, in the system's viewer (ctrl+o)"),
    ("Browse plugins", "plugins", "search, inspect, install, enable and disable plugins (f2)"),
    ("Cancel the running edit", "cancel", "stops after the current denoising step (escape)"),
]


class ChatCommands(Provider):
    async def startup(self) -> None:
        screen = self.screen
        registry = getattr(getattr(screen, "session", None), "registry", None)
        plugins = await asyncio.to_thread(registry.plugins) if registry is not None else []
        # The palette reads markup in help texts: a manifest's brackets are escaped to show as they are.
        self.plugins = [(s.id, ", ".join(s.manifest.tasks), printable(s.manifest.name).replace("[", "\\["))
                        for s in plugins if s.runnable]

    def _targets(self):
        from assistant.chat.chat_screen import ChatScreen
        from assistant.chat.slash import Slash

        screen = self.screen
        if not isinstance(screen, ChatScreen):
            return
        for title, action, help_text in ACTIONS:
            yield title, partial(self.app.run_action, action, screen), help_text
        for plugin_id, tasks, name in self.plugins:
            yield (f"Add step: {plugin_id}", partial(screen.slash, Slash("add", [plugin_id])),
                   f"{name} ({tasks})")

    async def discover(self) -> Hits:
        for title, callback, help_text in self._targets():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in self._targets():
            if (score := matcher.match(f"{title} {help_text}")) > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
