"""The main screen: the conversation and the plan on the left, the photo before and after on the right."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label

from assistant.chat.modals import TextModal
from assistant.chat.session import YES, ChatError, ChatSession, describe_step
from assistant.chat.slash import Slash, SlashError, help_text, parse
from assistant.chat.widgets import EditProgress, MessageLog, PlanTable, Preview
from assistant.error_report import debug_enabled, describe

#: Every failure of an action (a bad photo, a refused plugin, an unreachable LLM, the GPU out of memory, a
#: plugin's own bug) becomes a message in the chat: the app never crashes on one. `error` tells the user's from
#: a bug (assistant/error_report.py), as the CLI does.
SHOWN_ERRORS = (Exception,)

#: What shows, with a moving indicator, from a request until its answer (the first one also waits for the planner).
PLANNING = "planning…"
LOADING_PLANNER = "loading the planner (the first time takes a few seconds), then planning…"


if TYPE_CHECKING:
    from collections.abc import Callable

    from assistant.chat.app import ChatApp
    from assistant.chat.store import Version
    from assistant.planning import Plan


class ChatScreen(Screen[None]):
    if TYPE_CHECKING:  # the app this screen runs in (Textual types it as any App)
        app: ChatApp

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run_plan", "Run plan", id="chat.run"),
        Binding("escape", "cancel", "Cancel run", id="chat.cancel"),
        Binding("ctrl+z", "undo", "Undo", id="chat.undo"),
        Binding("ctrl+y", "redo", "Redo", id="chat.redo"),
        Binding("ctrl+s", "export", "Export", id="chat.export"),
        Binding("ctrl+o", "view", "Open in viewer", id="chat.view"),
        Binding("f2", "plugins", "Plugins", id="chat.plugins"),
    ]

    def __init__(self, session: ChatSession, renderer: str = "auto") -> None:
        super().__init__()
        self.session = session
        self.renderer = renderer
        self.cancel_event: threading.Event | None = None
        self.planner_ready = threading.Event()
        self.requests = 0  # requests sent so far: "planning…" shows until the last one is answered

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="conversation"):
                yield MessageLog(id="log")
                yield PlanTable(id="plan")
                yield EditProgress(id="progress")
                yield Input(placeholder="What should I do with the photo? (/help lists commands)", id="prompt")
            yield Preview(self.renderer, id="preview")
        yield Footer()

    def on_mount(self) -> None:
        log = self.query_one(MessageLog)
        for message in self.session.messages():
            log.add(message.role, message.text)
        if self.session.notice:
            log.add("assistant", self.session.notice)
        if not self.session.messages():
            log.add("assistant", "Hello! Open a photo with /open PATH, then tell me what to fix.")
        self.query_one(EditProgress).stop()
        self.refresh_plan()
        self.refresh_photo()
        self.query_one("#prompt", Input).focus()
        # After the first frame: importing torch in a thread still holds the interpreter for long stretches.
        self.call_after_refresh(self.load_planner)

    # ------------------------------------------------------------------ showing state
    def say(self, role: str, text: str, persist: bool = False) -> None:
        if persist:
            self.session.say(role, text)
        self.query_one(MessageLog).add(role, text)

    def error(self, err: BaseException | str, doing: str = "") -> None:
        """`err` in the conversation: a user error as its message, a bug as a notice with the log's path (and,
        with --debug, the traceback); `doing` says what failed ("could not load the planner")."""
        if isinstance(err, str):
            self.say("error", f"error: {err}", persist=True)
            return
        failure = describe(err)
        text = f"{doing}: {failure.text()}" if doing else failure.text()
        self.say("error", text if failure.internal else f"error: {text}", persist=True)
        if failure.details and debug_enabled():
            self.say("error", failure.details.rstrip())

    def refresh_plan(self) -> None:
        self.query_one(PlanTable).show(self.session.pending)

    def refresh_photo(self) -> None:
        current = self.session.current()
        if current is None:
            self.query_one(Preview).show(None, None)
            self.sub_title = "no photo"
            return
        versions = self.session.versions()
        if current.index == 0:
            self.query_one(Preview).show(self.session.image(current), None, "after: no edits yet")
        else:
            self.query_one(Preview).show(self.session.image(versions[current.index - 1]), self.session.image(current),
                                         f"after: version {current.index}, {current.label}")
        self.sub_title = f"version {current.index} of {len(versions) - 1}: {current.label}"

    # ------------------------------------------------------------------ input
    @on(Input.Submitted, "#prompt")
    def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        event.input.value = ""
        if not text:
            return
        try:
            command = parse(text)
        except SlashError as err:
            self.say("user", text)
            self.error(err)
            return
        if command is not None:
            self.say("user", text)
            self.slash(command)
        elif self.session.pending is not None and YES.match(text):
            self.say("user", text, persist=True)
            self.action_run_plan()
        else:
            self.say("user", text)
            self.requests += 1
            self.query_one(MessageLog).wait(PLANNING if self.planner_ready.is_set() else LOADING_PLANNER)
            self.propose(text, self.requests)

    def slash(self, command: Slash) -> None:
        name, args = command.name, command.args
        try:
            if name == "help":
                self.say("assistant", help_text())
            elif name == "run":
                self.action_run_plan()
            elif name in ("undo", "redo", "export", "view", "plugins"):
                getattr(self, f"action_{name}")(*args[:1])
            elif name == "open":
                if not args:
                    raise SlashError("/open needs a path: /open PATH")
                if self.cancel_event is not None:
                    raise ChatError("an edit is running; wait for it (or cancel it with escape) before /open")
                _, text = self.session.open_photo(Path(args[0]).expanduser())
                self.say("assistant", text)
                self.refresh_plan()
                self.refresh_photo()
            elif name == "history":
                current = self.session.refresh().current
                self.say("assistant", "\n".join(("* " if v.index == current else "  ") + f"{v.index}. {v.label}"
                                                for v in self.session.versions()) or "no versions yet")
            elif name == "move":
                self._changed(self.session.move(command.number(0), command.number(1)))
            elif name == "remove":
                self._changed(self.session.remove(command.number(0)))
            elif name == "add":
                if not args:
                    raise SlashError("/add needs a task or a plugin id: /add dehaze")
                self._changed(self.session.add(args[0], command.number(1) if len(args) > 1 else None))
            elif name == "set":
                key, sep, value = (args[1] if len(args) > 1 else "").partition("=")
                if not sep:
                    raise SlashError("/set needs N KEY=VALUE, e.g. /set 1 strength=0.8")
                self._changed(self.session.set_param(command.number(0), key, value))
        except SHOWN_ERRORS as err:
            self.error(err)

    def _changed(self, plan: Plan | None) -> None:
        self.refresh_plan()
        steps = plan.steps if plan is not None and self.session.pending is not None else []
        self.say("assistant", "Plan now:\n" + "\n".join(describe_step(i, s) for i, s in enumerate(steps, 1))
                 if steps else "The plan is empty now.")

    @on(PlanTable.StepAction)
    def step_action(self, event: PlanTable.StepAction) -> None:
        if event.action == "move":
            self.slash(Slash("move", [str(event.number), str(event.number + event.offset)]))
        elif event.action == "remove":
            self.slash(Slash("remove", [str(event.number)]))
        else:
            pending = self.session.pending
            assert pending is not None  # the table shows the pending plan's steps
            step = pending.steps[event.number - 1]
            current = " ".join(f"{k}={v}" for k, v in step.params.items())

            def apply(answer: str | None) -> None:
                for pair in (answer or "").split():
                    self.slash(Slash("set", [str(event.number), pair]))

            self.app.push_screen(TextModal(f"Options for step {event.number} ({step.task}), as key=value:",
                                           current, "e.g. strength=0.8"), apply)

    # ------------------------------------------------------------------ slow work, in threads
    @work(thread=True, exclusive=True, group="planner")
    def load_planner(self) -> None:
        from assistant.planning import load_planner

        llm = getattr(self.app, "llm", None)
        self.session.planner_error = None
        try:
            try:
                self.session.planner = load_planner(self.session.registry, llm,
                                                    getattr(self.app, "llm_timeout", None))
            except SHOWN_ERRORS as err:
                if not llm:
                    raise
                self.app.call_from_thread(self.error, f"could not use the language model {llm} ({err}); "
                                                      "planning without it")
                self.session.planner = load_planner(self.session.registry, None)
        except SHOWN_ERRORS as err:
            self.session.planner_error = str(err)
            self.app.call_from_thread(self.error, err, "could not load the planner")
        finally:
            self.planner_ready.set()

    @work(thread=True, exclusive=True, group="plan")
    def propose(self, request: str, number: int) -> None:
        if not self.planner_ready.is_set():  # the first request may come while the selector still loads
            self.planner_ready.wait(timeout=300)
            self.app.call_from_thread(lambda: self.query_one(MessageLog).wait(PLANNING))
        try:
            reply = self.session.propose(request)
        except SHOWN_ERRORS as err:
            self.app.call_from_thread(self._replied, number, err)
            return
        self.app.call_from_thread(self._replied, number, reply.text)

    def _replied(self, number: int, answer: str | BaseException) -> None:
        """The answer to request `number`, in place of "planning…" when it is the last one sent (a request sent
        meanwhile replaced the one before: only its answer is sure to come)."""
        if number == self.requests:
            self.query_one(MessageLog).stop_waiting()
        if isinstance(answer, str):
            self.say("assistant", answer)
            self.refresh_plan()
        else:
            self.error(answer)

    def action_run_plan(self) -> None:
        if self.session.pending is None:
            self.error("no plan to run: say what you want done first")
            return
        if self.cancel_event is not None:
            self.error("an edit is already running (escape cancels it)")
            return
        self.cancel_event = threading.Event()
        self.query_one(EditProgress).start(len(self.session.pending.steps))
        self.run_plan(self.cancel_event)

    @work(thread=True, exclusive=True, group="run")
    def run_plan(self, cancel: threading.Event) -> None:
        from assistant.executor import Cancelled

        progress = self.query_one(EditProgress)
        try:
            _, text = self.session.run(lambda event: self.app.call_from_thread(progress.event, event), cancel)
        except Cancelled:
            self.app.call_from_thread(self.say, "assistant", "Cancelled; the photo is as it was.", True)
        except SHOWN_ERRORS as err:
            self.app.call_from_thread(self.error, err)
        else:
            self.app.call_from_thread(self.say, "assistant", text)
        finally:
            self.app.call_from_thread(self._finished)

    def _finished(self) -> None:
        self.cancel_event = None
        self.query_one(EditProgress).stop()
        self.refresh_plan()
        self.refresh_photo()

    def action_cancel(self) -> None:
        if self.cancel_event is not None:
            self.cancel_event.set()
            self.query_one("#progress-label", Label).update("cancelling after this step…")

    # ------------------------------------------------------------------ history, files, plugins
    def action_undo(self) -> None:
        self._history(self.session.undo)

    def action_redo(self) -> None:
        self._history(self.session.redo)

    def _history(self, move: Callable[[], tuple[Version, str]]) -> None:
        if self.cancel_event is not None:
            self.error("wait for the running edit (or cancel it with escape)")
            return
        try:
            _, text = move()
        except ChatError as err:
            self.error(err)
            return
        self.say("assistant", text)
        self.refresh_photo()

    def action_export(self, path: str | None = None) -> None:
        try:
            target = Path(path).expanduser() if path else self._default_export()
            _, text = self.session.export(target)
        except SHOWN_ERRORS as err:
            self.error(err)
            return
        self.say("assistant", text)

    def _default_export(self) -> Path:
        photo = self.session.refresh().photo
        stem = Path(photo).stem if photo else "photo"
        for n in range(1, 1000):
            target = Path.cwd() / f"{stem}-edited{'' if n == 1 else f'-{n}'}.png"
            if not target.exists():
                return target
        raise ChatError("too many exports here; give a path: /export PATH")

    def action_view(self) -> None:
        current = self.session.current()
        if current is None:
            self.error("no photo yet: /open PATH")
            return
        from assistant.chat.app import NoViewer

        try:
            self.app.open_in_viewer(current.file)
        except NoViewer as err:
            self.error(f"no image viewer found ({err}); the photo is at {current.file}")
        except OSError as err:
            self.error(f"could not open an image viewer ({err}); the photo is at {current.file}")
        else:
            self.say("assistant", f"Opened version {current.index} in the image viewer: {current.file}")

    def action_plugins(self) -> None:
        from assistant.chat.plugins_screen import PluginsScreen

        def closed(changed: bool | None) -> None:
            if changed:
                self.say("assistant", "Plugins changed; reloading the planner.")
                self.session.planner = None
                self.planner_ready.clear()
                self.load_planner()

        self.app.push_screen(PluginsScreen(self.session.registry), closed)
