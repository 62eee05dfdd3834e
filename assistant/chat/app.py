"""The Textual app behind `diffplugin chat`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from assistant.chat.chat_screen import ChatScreen
from assistant.chat.palette import ChatCommands
from assistant.chat.session import ChatSession
from plugins.errors import BadInput


def keymap_file() -> Path:
    from assistant.paths import data_dir

    return data_dir() / "chat" / "keymap.yaml"


def load_keymap() -> dict[str, str]:
    """Your own keys, by binding id (`chat.undo: f9`), from keymap.yaml in the chat's data folder."""
    import yaml

    path = keymap_file()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise BadInput(f"{path}: not YAML ({str(err).splitlines()[0]}); expected lines like `chat.undo: f9`") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise BadInput(f"{path}: expected lines like `chat.undo: f9` (binding id: keys)")
    return data


class NoViewer(OSError):
    """This system has no image viewer to show a photo in: no display, or nothing that opens images."""


def system_viewer(path: Path) -> None:
    """Open `path` in the system's image viewer; `NoViewer` where there is none (over SSH, in a container)."""
    import os
    import shutil
    import subprocess
    import sys

    if sys.platform == "darwin" or sys.platform.startswith("win"):  # these always have one
        import click

        if click.launch(str(path)) != 0:
            raise NoViewer("the system could not open it")
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise NoViewer("no display")
    opener = shutil.which("xdg-open")
    if opener is None:
        raise NoViewer("xdg-open is not installed")
    # Quiet, or its complaints would be drawn over the chat; its own session, so the viewer outlives the chat.
    subprocess.Popen([opener, str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


class ChatApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "diffplugin chat"
    COMMANDS = App.COMMANDS | {ChatCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("f1", "toggle_help", "Keys", id="app.help"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(self, session: ChatSession, renderer: str = "auto", llm: str | None = None,
                 viewer: Callable[[Path], None] = system_viewer, llm_timeout: float | None = None) -> None:
        super().__init__()
        self.session, self.renderer, self.llm, self.viewer = session, renderer, llm, viewer
        self.llm_timeout = llm_timeout  # seconds per answer of the --llm model (None: the provider's default)

    def on_mount(self) -> None:
        try:
            self.set_keymap(load_keymap())
        except ValueError as err:  # `diffplugin chat` checks it first; this is for apps started from Python
            self.notify(str(err), severity="error", markup=False)
        self.push_screen(ChatScreen(self.session, self.renderer))

    def action_toggle_help(self) -> None:
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    def open_in_viewer(self, path: Path) -> None:
        """Show `path` in the viewer; `NoViewer` (or another `OSError`) when it cannot, for the chat to say."""
        self.viewer(path)
