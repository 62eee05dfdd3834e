"""What the chat does, without any UI: a conversation about one photo.

The user asks; the planner proposes a plan; the user may reorder, remove, add or tune its steps; running it makes
a new version of the photo. Versions form an undo/redo history. Everything is persisted through
`ConversationStore`, so a conversation can be resumed. The Textual app (app.py) only renders this and runs the
slow calls (`plan`, `run`) in worker threads.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import PIL.Image

from assistant.chat.store import Conversation, ConversationStore, Message, Version
from assistant.planning import Plan, Step
from plugins.errors import DiffPluginError
from plugins.tasks import TASKS

if TYPE_CHECKING:  # the executor and the planners load on first use (the selector takes seconds)
    from assistant.executor import Executor
    from assistant.planning.planner import Planner, RequestPlanner
    from plugins.progress import Progress
    from registry.store import Registry

#: Replies that mean "run the plan you proposed".
YES = re.compile(r"^\s*(y|yes|yep|sure|ok|okay|go|go ahead|do it|run|run it|apply|apply it|please do)\W*$", re.I)

# Answers to "Remove the haze, brighten it, or both?": every word from these lists, and one that decides.
_ALL = frozenset({"y", "yes", "yeah", "yep", "sure", "ok", "okay", "fine", "go", "both", "all", "everything"})
_NONE = frozenset({"n", "no", "nope", "neither", "none", "nothing", "skip", "leave", "don't", "dont"})
_AROUND = frozenset({
    "please", "do", "it", "of", "them", "three", "four", "the", "lot", "ahead", "thanks", "thank", "you", "as", "is",
    "just", "for", "now",
})

#: How the chat names what the detector saw and offers to do about it, per catalogue task that has the words;
#: others are named by their task.
SEEN: dict[str, tuple[str, str]] = {task.id: (task.seen, task.offer) for task in TASKS.values() if task.seen}


class ChatError(DiffPluginError, ValueError):
    """Something the user asked that cannot be done now, said in one line."""


@dataclass
class Reply:
    """What the assistant says back: text, and the plan it proposes (if any)."""

    text: str
    plan: Plan | None = None
    ask: bool = False  # the assistant is unsure and waits for a yes or a change


@dataclass
class Question:
    """What the assistant asked instead of guessing: the steps it offered (what the photo shows, and what the
    request may have meant), and the steps the request asked for surely, which every answer keeps."""

    request: str
    sure: list[Step]
    options: list[Step]


@dataclass
class ChatSession:
    store: ConversationStore
    conversation: Conversation
    registry: Registry
    planner: RequestPlanner | None = None  # loaded lazily: the selector takes seconds to load
    planner_error: str | None = None  # why the planner could not load, if it could not
    notice: str | None = None  # said first when the chat opens, and not kept (e.g. why this conversation is new)
    executor: Executor | None = None
    _pending: Plan | None = None
    _question: Question | None = None  # asked and not answered yet (not kept when the chat closes)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.conversation.pending:  # a plan proposed before the conversation was closed
            self._pending = Plan.model_validate_json(self.conversation.pending)

    @property
    def pending(self) -> Plan | None:
        """The proposed plan, not run yet; saved with the conversation whenever it changes."""
        return self._pending

    @pending.setter
    def pending(self, plan: Plan | None) -> None:
        self._pending = plan if plan is not None and plan.steps else None
        self.store.set_pending(self.id, self._pending.to_json() if self._pending else None)

    # ------------------------------------------------------------------ opening
    @classmethod
    def start(cls, store: ConversationStore, registry: Registry, photo: Path | None = None) -> ChatSession:
        conversation = store.create(photo.name if photo else "new conversation", photo)
        session = cls(store, conversation, registry)
        if photo is not None:
            session.open_photo(photo)
        return session

    @classmethod
    def resume(cls, store: ConversationStore, registry: Registry, conversation: str) -> ChatSession:
        return cls(store, store.get(conversation), registry)

    def open_photo(self, photo: Path) -> tuple[Version, str]:
        """Start the history from `photo` (read, never written: version 0 is a copy)."""
        from plugins.data.photos import load_photo

        image = load_photo(photo)
        self.pending = None
        self._question = None
        self.store.set_current(self.conversation.id, -1)
        self.store.set_photo(self.id, photo.resolve())
        version = self._save_version(image, None, f"original: {photo.name}")
        text = f"Opened {photo.name} ({image.width}x{image.height}). What should I do with it?"
        self.say("assistant", text)
        return version, text

    # ------------------------------------------------------------------ reading state
    @property
    def id(self) -> str:
        return self.conversation.id

    def refresh(self) -> Conversation:
        self.conversation = self.store.get(self.conversation.id)
        return self.conversation

    def messages(self) -> list[Message]:
        return self.store.messages(self.id)

    def versions(self) -> list[Version]:
        return self.store.versions(self.id)

    def current(self) -> Version | None:
        index = self.refresh().current
        versions = self.versions()
        return versions[index] if 0 <= index < len(versions) else None

    def image(self, version: Version | None = None) -> PIL.Image.Image:
        version = version or self.current()
        if version is None:
            raise ChatError("no photo yet: /open PATH, or start with `diffplugin chat PHOTO`")
        with PIL.Image.open(version.file) as opened:
            return opened.convert("RGB")

    def original(self) -> PIL.Image.Image:
        versions = self.versions()
        if not versions:
            raise ChatError("no photo yet: /open PATH")
        return self.image(versions[0])

    def say(self, role: str, text: str) -> None:
        self.store.add_message(self.id, role, text)

    # ------------------------------------------------------------------ planning
    def propose(self, request: str) -> Reply:
        """Plan `request` on the current photo; the plan waits for the user's go (or changes). When the request
        names no task or a step is a guess, the assistant asks one question about what it sees in the photo
        instead, and plans the answer."""
        self.say("user", request)
        if self.planner is None:
            if self.planner_error:
                raise ChatError(f"the planner could not load ({self.planner_error}); /add TASK builds a plan by hand")
            raise ChatError("the planner is still loading; try again in a moment")
        image = self.image() if self.current() else None
        question, self._question = self._question, None
        if question is not None:
            reply = self._answer(question, request, image)
        else:
            plan = self.planner.plan(request, image)
            reply = (self._ask(plan, image) if image is not None else None) or self._proposal(plan)
        self.say("assistant", reply.text)
        return reply

    def _proposal(self, plan: Plan) -> Reply:
        from assistant.planning.planner import LOW_CONFIDENCE

        if not plan.steps:
            self.pending = None
            if plan.needs_photo:
                return Reply("What to fix depends on the photo, and there is none yet: /open PATH, or say what is "
                             "wrong (e.g. \"remove the haze\", \"make it brighter\").")
            return Reply("I can't do that with the installed plugins. " + " ".join(plan.notes)
                         + " Try e.g. \"remove the rain\" or \"make it brighter\"; F2 browses plugins.")
        self.pending = plan
        unsure = _unsure(plan, LOW_CONFIDENCE)
        lines = [f"Here is my plan ({len(plan.steps)} step{'s' if len(plan.steps) > 1 else ''}):"]
        lines += [describe_step(i, s) for i, s in enumerate(plan.steps, 1)]
        lines += [f"note: {note}" for note in plan.notes]
        if unsure:
            lines.append(f"I'm not sure you asked for {', '.join(s.task for s in unsure)}. Say yes to run it "
                         "anyway, or change the plan (/remove N).")
        else:
            lines.append("Say yes (or ctrl+r) to run it, or change it first: /move, /remove, /add, /set.")
        return Reply("\n".join(lines), plan, ask=bool(unsure))

    def _ask(self, plan: Plan, image: PIL.Image.Image) -> Reply | None:
        """One short question listing what the photo shows, when `plan` is the detector's (the request named no
        task) or holds a guess; None when the plan is sure."""
        from assistant.planning.planner import LOW_CONFIDENCE, asked_by

        unsure = _unsure(plan, LOW_CONFIDENCE)
        if plan.source != "detector" and not unsure:
            return None
        seen = plan if plan.source == "detector" else _deterministic(self.planner).from_photo(plan.request or "",
                                                                                                image)
        sure = [s for s in plan.steps if plan.source != "detector" and s not in unsure]
        options: list[Step] = []
        for step in [*seen.steps, *unsure]:
            if all(step.task != other.task for other in [*sure, *options]):
                options.append(step)
        self.pending = None
        if not options:  # the request named no task and the photo shows nothing the detector knows
            lines = ["I see nothing in this photo that I know how to fix. What should I change? For example "
                     "\"brighten it\", \"remove the haze\" or \"add contrast\"."]
            return Reply("\n".join(lines + [f"note: {note}" for note in plan.notes]), ask=True)
        self._question = Question(plan.request or "", sure, options)
        text = []
        if unsure:
            meant = dict.fromkeys(f'"{asked_by(step) or plan.request}"' for step in unsure)
            text.append(f"I'm not sure what you meant by {_joined(list(meant))}.")
        if sure:
            text.append(f"I'll {_joined([_wording(s.task)[1] for s in sure])}.")
        found = [_wording(s.task)[0] for s in seen.steps if s in options]
        text.append(f"I see {_joined(found)}." if found else "The photo shows nothing else I know how to fix.")
        offers = [_wording(s.task)[1] for s in options]
        last = "" if len(offers) == 1 else ", or both" if len(offers) == 2 else ", or all of them"
        question_text = f"{', '.join(offers)}{last}?"
        text.append(question_text[:1].upper() + question_text[1:])
        return Reply(" ".join(text), ask=True)

    def _answer(self, question: Question, answer: str, image: PIL.Image.Image | None) -> Reply:
        """Plan the answer to `question`: "both"/"yes" takes every option, "no" none; any other answer is a
        request, planned without asking again. The steps asked for surely stay either way."""
        from assistant.planning.planner import words as words_of

        words = set(words_of(answer))
        request = f"{question.request}; {answer}"
        if words and words <= _ALL | _AROUND and words & _ALL and not words & _NONE:
            return self._proposal(self._chosen(request, [*question.sure, *question.options]))
        if words and words <= _NONE | _AROUND and words & _NONE:
            if not question.sure:
                self.pending = None
                return Reply("OK, I'll leave the photo as it is. Tell me whenever you want something changed.")
            return self._proposal(self._chosen(request, question.sure))
        assert self.planner is not None  # it asked the question
        plan = self.planner.plan(answer, image)
        if not question.sure:
            return self._proposal(plan)
        added = [s for s in plan.steps if all(s.task != sure.task for sure in question.sure)]
        return self._proposal(self._chosen(request, [*question.sure, *added], plan.notes))

    def _chosen(self, request: str, steps: list[Step], notes: list[str] | None = None) -> Plan:
        """The plan of the steps the user chose, in the policy's order, with what to know about their plugins
        (the guesses and findings that led to them were in the question)."""
        from assistant.planning.planner import choose_plugin

        said = [*(notes or []), *(choose_plugin(self.registry, s.task, s.plugin)[1] for s in steps)]
        return _deterministic(self.planner).ordered(request, steps, [n for n in dict.fromkeys(said) if n])

    def _plan(self) -> Plan:
        if self.pending is None or not self.pending.steps:
            raise ChatError("no plan yet: say what you want done first")
        return self.pending

    def _step_index(self, number: int) -> int:
        steps = self._plan().steps
        if not 1 <= number <= len(steps):
            raise ChatError(f"there is no step {number}; the plan has steps 1 to {len(steps)}")
        return number - 1

    def move(self, number: int, to: int) -> Plan:
        plan = self._plan()
        step = plan.steps.pop(self._step_index(number))
        plan.steps.insert(max(0, min(to - 1, len(plan.steps))), step)
        plan.order = "user"
        self.pending = plan
        return plan

    def remove(self, number: int) -> Plan:
        plan = self._plan()
        plan.steps.pop(self._step_index(number))
        self.pending = plan  # None once the last step is gone
        return plan

    def add(self, ref: str, position: int | None = None) -> Plan:
        """Add a step by plugin id (namespace/name) or task (the best runnable plugin for it is chosen)."""
        from assistant.planning.planner import choose_plugin

        if "/" in ref:
            status = self.registry.get(ref)
            step = Step(plugin=status.id, task=status.manifest.tasks[0], reason="you added it")
        else:
            plugin, note = choose_plugin(self.registry, ref, None)
            if plugin is None:
                raise ChatError(f"no plugin does '{ref}'; F2 searches and installs plugins")
            step = Step(plugin=plugin, task=ref, reason="you added it" + (f" ({note})" if note else ""))
        self._question = None  # building the plan by hand answers it
        plan = self._pending or Plan(request=None, steps=[], source="user", order="user")
        plan.steps.insert(len(plan.steps) if position is None else max(0, min(position - 1, len(plan.steps))), step)
        self.pending = plan
        return plan

    def set_param(self, number: int, key: str, value: str) -> Plan:
        """Set a step's option; numbers and true/false are parsed, the rest stays text. An option the step's
        plugin does not take, or a value of another type than its default's, is refused here, not by the run."""
        import yaml

        from assistant.chat.options import checked, option_types
        from assistant.planning.plan import load_yaml

        plan = self._plan()
        if not key.isidentifier():
            raise ChatError(f"'{key}' is not an option name")
        try:
            parsed = load_yaml(value) if value else None
        except (ValueError, yaml.YAMLError) as err:  # the bounds' errors are ValueErrors
            raise ChatError(f"{key}: {str(err).splitlines()[0][:200]}") from None
        if isinstance(parsed, dict | list):
            raise ChatError(f"{key}: an option is a number, true/false or text")
        step = plan.steps[self._step_index(number)]
        step.params[key] = checked(option_types(self.registry, step.plugin), f"step {number} ({step.plugin})",
                                   key, value, parsed)
        self.pending = plan
        return plan

    # ------------------------------------------------------------------ running
    def run(self, progress: Progress | None = None, cancel: threading.Event | None = None) -> tuple[Version, str]:
        """Run the pending plan on the current photo; the result becomes the next version. The plan is copied
        first, so changes made while it runs (a new request, /move) neither affect this run nor get lost."""
        from assistant.executor import Executor
        from assistant.planning import run_plan

        proposed = self._plan()
        plan = proposed.model_copy(deep=True)
        with self._lock:  # one edit at a time, whatever the UI allows
            if self.executor is None:
                self.executor = Executor()
            result = run_plan(plan, self.image(), self.registry, self.executor, progress, cancel)
            label = " -> ".join(s.task for s in plan.steps) or "no change"
            version = self._save_version(result.image, plan.to_json(), label)
        if self._pending is proposed:
            self.pending = None
        notes = "".join(f"\nnote: {note}" for note in result.notes)
        text = f"Done: {label} (version {version.index}).{notes} ctrl+z undoes it."
        self.say("assistant", text)
        return version, text

    def _save_version(self, image: PIL.Image.Image, plan: dict[str, Any] | None, label: str) -> Version:
        from assistant.photo_output import save_result

        current = self.refresh().current
        file = self.store.version_folder(self.id) / f"v{current + 1}-{_stamp()}.png"
        save_result(image, file, overwrite=False)
        version = self.store.add_version(self.id, file, plan, label)
        self.refresh()
        return version

    # ------------------------------------------------------------------ history
    def undo(self) -> tuple[Version, str]:
        current = self.refresh().current
        if current <= 0:
            raise ChatError("nothing to undo")
        self.store.set_current(self.id, current - 1)
        version = self.current()
        assert version is not None  # the index just set is in the history
        text = f"Undone: back to version {version.index} ({version.label})."
        self.say("assistant", text)
        return version, text

    def redo(self) -> tuple[Version, str]:
        current, count = self.refresh().current, len(self.versions())
        if current >= count - 1:
            raise ChatError("nothing to redo")
        self.store.set_current(self.id, current + 1)
        version = self.current()
        assert version is not None  # the index just set is in the history
        text = f"Redone: version {version.index} ({version.label})."
        self.say("assistant", text)
        return version, text

    def combined_plan(self) -> Plan:
        """One plan that replays every edit from the original to the current version. (Replayed, consecutive
        diffusion steps from different edits run as one chain, as any plan's do; see docs/chat.md.)"""
        index = self.refresh().current
        steps: list[Step] = []
        requests: list[str] = []
        for version in self.versions()[1:index + 1]:
            plan = Plan.model_validate(version.plan)
            steps += plan.steps
            if plan.request:
                requests.append(plan.request)
        return Plan(request="; then ".join(requests) or None, steps=steps, source="user", order="user")

    def export(self, output: Path, overwrite: bool = False) -> tuple[list[Path], str]:
        """Write the current version and the plan that replays it from the original (a .plan.yaml beside it).
        Refused at version 0: a copy of the photo as it was opened, named as edited, would only mislead."""
        from assistant.photo_output import check_output, save_result

        original = self.refresh().photo
        current = self.current()
        if current is not None and current.index == 0:
            undone = " (ctrl+y redoes the edit you undid)" if len(self.versions()) > 1 else ""
            raise ChatError(f"nothing edited yet, so nothing was saved: your photo is as it was, at {original}; "
                            f"ask for an edit first{undone}")
        check_output(output, [Path(original)] if original else [], overwrite, with_plan=True)
        written = save_result(self.image(), output, self.combined_plan(), overwrite=overwrite)
        text = f"Saved {output} and its plan {written[-1].name}."
        self.say("assistant", text)
        return written, text


def _unsure(plan: Plan, below: float) -> list[Step]:
    """The selector's guesses in `plan` (a detector's confidence measures the photo, not the request; a plan
    made from an answer holds what the user chose)."""
    if plan.source != "selector":
        return []
    return [s for s in plan.steps if s.confidence is not None and s.confidence < below]


def _deterministic(planner: RequestPlanner | None) -> Planner:
    """The deterministic planner, also behind a language model's (which wraps it as `fallback`)."""
    return cast("Planner", getattr(planner, "fallback", planner))


def _wording(task: str) -> tuple[str, str]:
    return SEEN.get(task, (task, f"run {task}"))


def _joined(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def describe_step(number: int, step: Step) -> str:
    sure = f", confidence {step.confidence:.2f}" if step.confidence is not None else ""
    params = f" {step.params}" if step.params else ""
    return f"{number}. {step.task} with {step.plugin}{params} ({step.reason}{sure})"


def _stamp() -> str:
    import time

    return f"{time.time_ns():x}"
