"""The chat's widgets: the message log, the editable plan, live progress and the photo preview."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import PIL.Image
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Label, LoadingIndicator, ProgressBar, Static

from assistant.cli.common import printable

if TYPE_CHECKING:
    from assistant.planning import Plan
    from plugins.progress import ProgressEvent

# textual-image asks the terminal for its cell size when imported, which it can no longer do once Textual owns
# the terminal: this module must be imported before the app starts (app.py does). A terminal that does not
# answer gets default sizes, and textual-image logs a warning with a traceback; with no logging configured Python
# would print it over the screen, so it goes nowhere.
logging.getLogger("textual_image").addHandler(logging.NullHandler())
from textual_image.widget import AutoImage as TerminalImage  # noqa: E402
from textual_image.widget import HalfcellImage, SixelImage, UnicodeImage  # noqa: E402
from textual_image.widget import Image as AutoImage  # noqa: E402

#: How previews are drawn: the best the terminal can show (Kitty/Sixel graphics, else coloured half cells), or
#: forced to half cells or Unicode characters.
RENDERERS: dict[str, type[TerminalImage | SixelImage | HalfcellImage | UnicodeImage]] = {
    "auto": AutoImage, "halfcell": HalfcellImage, "unicode": UnicodeImage}


class PendingReply(Horizontal):
    """Where the assistant's answer will appear, while it is worked out: a moving indicator and what it does."""

    def __init__(self, text: str) -> None:
        super().__init__(classes="message pending")
        self.text = text

    def compose(self) -> ComposeResult:
        yield LoadingIndicator()
        yield Label(self.text, markup=False)

    def show(self, text: str) -> None:
        self.text = text
        for label in self.query(Label):  # none yet when it was mounted a moment ago: compose uses the text
            label.update(text)


class MessageLog(VerticalScroll):
    """The conversation, newest at the bottom; below it, while the assistant works out an answer, what it does."""

    def add(self, role: str, text: str) -> None:
        message = Static(printable(text), markup=False, classes=f"message {role}")
        pending = self.pending()
        if pending is None:
            self.mount(message)
        else:
            self.mount(message, before=pending)
        self.scroll_end(animate=False)

    def pending(self) -> PendingReply | None:
        found = self.query(PendingReply)
        return found.first() if found else None

    def wait(self, text: str) -> None:
        """Show `text` ("planning…") with a moving indicator at the bottom, until `stop_waiting`."""
        pending = self.pending()
        if pending is None:
            self.mount(PendingReply(text))
        else:
            pending.show(text)
        self.scroll_end(animate=False)

    def stop_waiting(self) -> None:
        for pending in self.query(PendingReply):
            pending.remove()


class PlanTable(DataTable):
    """The proposed plan, one row per step; keys here edit it before it runs."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+up", "move(-1)", "Step up", id="plan.move_up"),
        Binding("ctrl+down", "move(1)", "Step down", id="plan.move_down"),
        Binding("delete", "remove", "Remove step", id="plan.remove"),
        Binding("e", "edit", "Edit options", id="plan.edit"),
    ]

    class StepAction(Message):
        """The user wants to change step `number` (1-based): action 'move' (by `offset`), 'remove' or 'edit'."""

        def __init__(self, action: str, number: int, offset: int = 0) -> None:
            super().__init__()
            self.action, self.number, self.offset = action, number, offset

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns("#", "task", "plugin", "options", "why")

    def show(self, plan: Plan | None) -> None:
        row = self.cursor_row
        self.clear()
        for number, step in enumerate(plan.steps if plan else [], start=1):
            options = ", ".join(f"{k}={v}" for k, v in step.params.items())
            # Text cells: the reason may come from a language model and the options from the user, and a table
            # reads markup in plain strings.
            self.add_row(*(Text(printable(cell)) for cell in (str(number), step.task, step.plugin, options,
                                                               step.reason)))
        self.display = bool(plan and plan.steps)
        if self.row_count:
            self.move_cursor(row=min(row, self.row_count - 1))

    def _number(self) -> int | None:
        return self.cursor_row + 1 if self.row_count else None

    def action_move(self, offset: int) -> None:
        if (number := self._number()) is not None:
            self.post_message(self.StepAction("move", number, offset))
            self.move_cursor(row=max(0, min(self.row_count - 1, self.cursor_row + offset)))

    def action_remove(self) -> None:
        if (number := self._number()) is not None:
            self.post_message(self.StepAction("remove", number))

    def action_edit(self) -> None:
        if (number := self._number()) is not None:
            self.post_message(self.StepAction("edit", number))


class EditProgress(Vertical):
    """Two live bars while a plan runs: plan steps, and denoising steps of the diffusion plugin running now."""

    def compose(self) -> ComposeResult:
        yield Label("", id="progress-label", markup=False)
        yield ProgressBar(id="plan-steps", show_eta=False)
        yield ProgressBar(id="denoise-steps", show_eta=False)

    def start(self, steps: int) -> None:
        self.display = True
        self.query_one("#plan-steps", ProgressBar).update(total=steps, progress=0)
        self.query_one("#denoise-steps", ProgressBar).display = False
        self.query_one("#progress-label", Label).update("starting… (escape cancels)")

    def event(self, event: ProgressEvent) -> None:
        """Show one of an edit's progress events (`Executor.run` reports them)."""
        label = self.query_one("#progress-label", Label)
        if event.kind == "denoise":
            bar = self.query_one("#denoise-steps", ProgressBar)
            bar.display = True
            bar.update(total=event.denoise_total, progress=event.denoise)
            label.update(f"{event.what}: denoising step {event.denoise}/{event.denoise_total} (escape cancels)")
            return
        self.query_one("#plan-steps", ProgressBar).update(progress=event.done)
        total = event.total or 0  # an edit always knows its step count
        label.update(f"step {min(event.done + 1, total)}/{total}: {event.what}")

    def stop(self) -> None:
        self.display = False


class Preview(Vertical):
    """Before and after, side by side in the terminal (graphics where it has them, else character cells)."""

    def __init__(self, renderer: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.renderer = RENDERERS[renderer]

    def compose(self) -> ComposeResult:
        yield Label("before", classes="caption")
        yield self.renderer(id="before")
        yield Label("after", classes="caption", id="after-caption", markup=False)  # it names the user's photo
        yield self.renderer(id="after")

    def show(self, before: PIL.Image.Image | None, after: PIL.Image.Image | None, caption: str = "after") -> None:
        self.query_one("#before", self.renderer).image = before
        self.query_one("#after", self.renderer).image = after
        self.query_one("#after-caption", Label).update(caption)
