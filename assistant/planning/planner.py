"""The deterministic planner: a request (and maybe a photo) -> a Plan.

Tasks come from the Plugin-Selector. With a photo and a request that names no task ("fix this photo"), they come
from the image-degradation detector; without a photo such a plan has no steps and says it `needs_photo`. Parts of
a request that matched nothing are named in `unplaced`. An order the user states always wins; otherwise the order
policy decides, with its reason on each step. For each task the planner prefers a diffusion plugin whose weights
are installed, then a built-in plugin, and says which it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from assistant.planning.plan import Plan, Step
from assistant.planning.policy import OrderPolicy, user_order
from assistant.selector.clauses import joined_clauses
from registry.errors import RegistryError
from registry.kinds import kind_for

if TYPE_CHECKING:  # the photo libraries and the registry load only when a plan is made
    import PIL.Image

    from assistant.detector import Finding
    from assistant.selector.model import Selection, Selector
    from registry.store import Registry

#: Below this selector confidence, a step is kept but the user is told it is a guess.
LOW_CONFIDENCE = 0.6
#: The detector's confidence from which a degradation is a finding (and gets a step).
FINDING = 0.5
#: "fix this photo" on a photo with no finding: tasks an enabled plugin can run that the detector gives at least
#: this chance are named as the closest guesses, with the words that would run them: a miss is one request away.
GUESS_FLOOR = 0.35

# A request "names no task" when its words only ask for a better photo ("make it pop", "fix my photo, it's all
# messed up"): then the photo, not the selector's guess, says what to do. Listing the words that name nothing is
# stricter than listing the words that name a task: any other word (a typo of "fog" included) counts as naming
# something, so an explicit request never goes to the detector by mistake.
#: Asking for a repair: "fix it", "improve this", "clean it up", "work your magic".
_FIX = frozenset({
    "fix", "fixed", "fixing", "improve", "improved", "improving", "enhance", "enhanced", "enhancing", "restore",
    "repair", "clean", "cleanup", "retouch", "polish", "beautify", "touch", "auto", "automatic", "whatever", "magic",
})
#: Saying something is wrong: "it's all messed up", "it looks bad".
_FAULT = frozenset({
    "messed", "mess", "wrong", "bad", "off", "ugly", "terrible", "awful", "horrible", "broken", "ruined",
})
#: Wishes for the result: asks only beside a wish ("make it pop", "I want it to look good"); alone they are
#: praise ("that looks great, thanks").
_NICE = frozenset({
    "better", "best", "good", "great", "nice", "nicer", "nicest", "pop", "pops", "popping", "beautiful", "prettier",
    "pretty", "lovely", "perfect", "awesome", "amazing", "stunning", "gorgeous", "professional", "polished",
})
_WISH = frozenset({
    "make", "makes", "making", "want", "wanted", "wants", "need", "needs", "wish", "i'd", "let's", "get",
})
#: Politeness: a part of a request made only of these asks for nothing ("please", "thanks", "for me").
_FILLER = frozenset({
    "please", "pls", "plz", "kindly", "thanks", "thank", "thx", "ty", "cheers", "you", "for", "me", "hi", "hello",
    "hey", "ok", "okay", "asap", "quick", "quickly", "now", "if", "can", "could", "would", "will", "you'd",
    "appreciate", "it", "much", "lot", "a", "so", "very",
})
#: Words around an ask that name nothing either.
_NEUTRAL = _FILLER | frozenset({
    "an", "the", "its", "it's", "this", "that", "that's", "these", "those", "my", "our", "your", "i", "i'm", "we", "to",
    "made", "look", "looks", "looking", "seem", "seems", "let", "do", "does", "have", "has", "photo", "photos",
    "picture", "pictures", "pic", "pics", "image", "images", "shot", "shots", "snap", "one", "just", "really", "quite",
    "bit", "little", "some", "more", "all", "whole", "everything", "overall", "thing", "stuff", "is", "are", "was",
    "be", "been", "being", "am", "and", "or", "but", "with", "of", "in", "on", "at", "up", "out", "kind", "sort",
    "somehow", "generally", "again", "here", "there", "help", "think", "work", "wonders", "like", "love",
})
_KNOWN = _FIX | _FAULT | _NICE | _WISH | _NEUTRAL


class RequestPlanner(Protocol):
    """What the CLI and the chat ask of a planner: this deterministic one, or the LLM planner in front of it."""

    def plan(self, request: str, image: PIL.Image.Image | None = None) -> Plan: ...


@dataclass
class Planner:
    registry: Registry
    selector: Selector
    policy: OrderPolicy

    def plan(self, request: str, image: PIL.Image.Image | None = None) -> Plan:
        selection = self.selector.select(request)
        notes = list(selection.notes)
        if names_no_task(selection):
            if image is not None:
                return self.from_photo(request, image, notes)
            notes.append(NEEDS_PHOTO)
            return Plan(request=request, steps=[], source="selector", order="none", notes=notes, needs_photo=True)
        if selection.rejected:
            notes.append("no plugin does that: nothing to run (`diffplugin plugins search` finds plugins)")
            return Plan(request=request, steps=[], source="selector", order="none", notes=notes)
        named = [(p.task, p.id, p.score, p.clause) for p in selection.plugins]
        joined = joined_clauses(request)
        stated = user_order(joined)
        if len(named) == 1:
            order, reasons, how = [named[0][0]], {}, "single"
        elif stated.stated:
            position = {clause: rank for rank, clause in enumerate(stated.clauses)}
            order = [t for t, *_ in sorted(named, key=lambda n: (position.get(n[3], len(position)), named.index(n)))]
            reasons, how = {t: "in the order you asked for" for t in order}, "user"
        else:
            order, reasons = self.policy.order([t for t, *_ in named])
            how = "policy"
        steps = []
        for task in order:
            _, suggested, score, clause = next(n for n in named if n[0] == task)
            plugin, note = choose_plugin(self.registry, task, suggested)
            if note:
                notes.append(note)
            said = selection.clauses[clause] if 0 <= clause < len(selection.clauses) else request
            reason = _ASKED.format(said) + (f"; {reasons[task]}" if reasons.get(task) else "")
            if score < LOW_CONFIDENCE:
                notes.append(f"not sure you asked for {task} (confidence {score:.2f}); remove the step if not")
            steps.append(Step(plugin=plugin, task=task, reason=reason, confidence=round(score, 4)))
        unplaced = self._unplaced(selection)
        if unplaced:
            quoted = ", ".join(f'"{part}"' for part in unplaced)
            notes.append(f"I could not place: {quoted} (no plugin does that; the plan leaves it out)")
        return Plan(request=request, steps=steps, source="selector", order=how,
                    policy_version=self.policy.version if how == "policy" else None, notes=notes, unplaced=unplaced)

    def _unplaced(self, selection: Selection) -> list[str]:
        """The parts of the request that selected nothing, besides politeness and general asks ("fix it"): each
        part that placed no plugin is selected again on its own, since it may name a task already in the plan
        ("it's foggy, clear the fog") or one no enabled plugin does (the selector's notes say so already)."""
        placed = {plugin.clause for plugin in selection.plugins}
        alone = getattr(self.selector, "offline", self.selector)  # the photo has no say on single words
        unplaced = []
        for index, clause in enumerate(selection.clauses):
            if index in placed or is_filler(clause) or is_general_ask(clause):
                continue
            if any(f"'{clause}'" in note for note in selection.notes) or alone.select(clause).plugins:
                continue
            unplaced.append(clause)
        return unplaced

    def from_photo(self, request: str, image: PIL.Image.Image, notes: list[str] | None = None) -> Plan:
        """The plan the photo asks for, whatever the request says: a step for each degradation the detector
        finds, in the policy's order."""
        from assistant.detector import detect

        notes = list(notes or [])
        seen = detect(image, GUESS_FLOOR)
        findings = [finding for finding in seen if finding.confidence >= FINDING]
        if not findings:
            served = {task for status in self.registry.plugins() if status.enabled and status.runnable
                      for task in status.manifest.tasks}
            notes.append("you named no task and the photo shows no degradation the detector knows"
                         + _closest([finding for finding in seen if finding.covered and finding.task in served]))
            return Plan(request=request, steps=[], source="detector", order="none", notes=notes)
        # Findings no restoration task covers (JPEG blocks) get no step, only an honest note.
        for finding in findings:
            if not finding.covered:
                notes.append(self._uncovered_note(finding))
        covered = [f for f in findings if f.covered]
        order, reasons = self.policy.order([f.task for f in covered])
        steps = []
        for task in order:
            finding = next(f for f in covered if f.task == task)
            plugin, note = choose_plugin(self.registry, task, None)
            if plugin is None:
                notes.append(f"the photo looks like it needs {task}, but no enabled plugin does it")
                continue
            if note:
                notes.append(note)
            reason = f"detected: {finding.evidence}" + (f"; {reasons[task]}" if reasons.get(task) else "")
            steps.append(Step(plugin=plugin, task=task, reason=reason, confidence=round(finding.confidence, 4)))
        notes.append("you named no task: the steps come from what the detector measured in the photo" if steps else
                     "you named no task and the photo shows nothing an enabled plugin fixes")
        return Plan(request=request, steps=steps, source="detector",
                    order="none" if not steps else "policy" if len(steps) > 1 else "single",
                    policy_version=self.policy.version, notes=notes)

    def ordered(self, request: str, steps: list[Step], notes: list[str] | None = None) -> Plan:
        """A plan of `steps` gathered in a conversation (one per task), in the policy's order; each step keeps
        its reason."""
        order, _ = self.policy.order([step.task for step in steps])
        by_task = {step.task: step for step in steps}
        how = "none" if not steps else "single" if len(steps) == 1 else "policy"
        return Plan(request=request, steps=[by_task[task] for task in order], source="planner", order=how,
                    policy_version=self.policy.version if how == "policy" else None, notes=list(notes or []))

    def _uncovered_note(self, finding: Finding) -> str:
        """'I see JPEG compression blocks; no installed plugin removes them', plus what the registry's search
        suggests for it (the search may load an embedding model, so it runs only for such findings)."""
        from assistant.detector import UNCOVERED

        wording = UNCOVERED.get(finding.task, {"seen": finding.task, "verb": "handles it", "search": finding.task})
        note = f"I see {wording['seen']}; no installed plugin {wording['verb']} (measured: {finding.evidence})"
        try:
            hits = self.registry.search(wording["search"], limit=3)
        except (RegistryError, OSError, ValueError, ImportError):  # no index or model: the note stands alone
            hits = []
        # A plugin is a candidate when it names the task or its text matches the request well (cosine >= 0.5).
        candidates = [hit.id for hit in hits if finding.task in hit.tasks or hit.score >= _SEARCH_MATCH]
        if candidates:
            note += f"; plugins that might: {', '.join(candidates)}"
        return note


def _closest(guesses: list[Finding]) -> str:
    """'; the closest guesses: snow (48%: say "remove the snow" to try it)', or nothing without guesses."""
    from plugins.tasks import TASKS

    named = []
    for guess in guesses[:2]:  # most confident first
        task = TASKS.get(guess.task)
        seen, offer = (task.seen, task.offer) if task is not None and task.seen else (guess.task, guess.task)
        named.append(f'{seen} ({guess.confidence:.0%}: say "{offer}" to try it)')
    if not named:
        return ""
    return f"; the closest {'guess' if len(named) == 1 else 'guesses'}: {', '.join(named)}"


#: Search score (cosine similarity) from which a plugin is offered for a finding no installed plugin covers.
_SEARCH_MATCH = 0.5

#: What a plan says when the request names no task and there is no photo to look at.
NEEDS_PHOTO = ("you named no task, so the photo decides what to fix: give one (`--image PHOTO`), or say what is "
               "wrong (e.g. \"remove the haze\", \"make it brighter\")")


#: How a selected step's reason quotes the words that asked for it.
_ASKED = 'you asked: "{}"'


def asked_by(step: Step) -> str | None:
    """The words of the request that asked for a selected step, if its reason quotes them."""
    match = re.match(re.escape(_ASKED).replace(r"\{\}", "(.*?)") + r"(?:;|$)", step.reason)
    return match[1] if match else None


def words(text: str) -> list[str]:
    """The words of `text`, lower-case, apostrophes kept ("it's")."""
    return re.findall(r"[a-z]+(?:'[a-z]+)?", text.lower().replace("\u2019", "'"))


def is_filler(clause: str) -> bool:
    """Politeness alone ("please", "thanks", "for me"): asks for nothing."""
    return all(word in _FILLER for word in words(clause))


def is_general_ask(clause: str) -> bool:
    """A part of a request that asks for a better photo without naming a task ("make it pop", "fix it")."""
    said = set(words(clause))
    asks = said & (_FIX | _FAULT) or (said & _NICE and said & _WISH)
    return bool(asks) and said <= _KNOWN


def names_no_task(selection: Selection) -> bool:
    """The request asks for a better photo but names no task, so the photo must say what to do: some part is a
    general ask, no step was selected surely, and either nothing was selected or every part besides politeness
    is a general ask. A sure selection always stands (an installed plugin may list "make it pop" among its
    examples)."""
    if any(plugin.score >= LOW_CONFIDENCE for plugin in selection.plugins):
        return False
    asking = [clause for clause in selection.clauses if not is_filler(clause)]
    general = [clause for clause in asking if is_general_ask(clause)]
    return bool(general) and (selection.rejected or len(general) == len(asking))


def choose_plugin(registry: Registry, task: str, suggested: str | None) -> tuple[str | None, str | None]:
    """The plugin to run for `task` and a note for the user: a runnable diffusion plugin, else a runnable
    built-in or other code plugin, else the suggested one (it will say why it cannot run)."""
    serving = [s for s in registry.plugins() if s.enabled and task in s.manifest.tasks]
    runnable = [s for s in serving if s.runnable]
    diffusion = [s for s in runnable if kind_for(s.manifest).diffusion]
    if diffusion:
        pick = next((s for s in diffusion if s.id == suggested), diffusion[0])
        return pick.id, None
    if runnable:
        pick = next((s for s in runnable if s.id == suggested), runnable[0])
        missing = [s.id for s in serving if kind_for(s.manifest).diffusion]
        note = (f"{task}: using {pick.id} (no diffusion weights installed for {', '.join(missing)}; "
                "`diffplugin models pull` gets them)") if missing else None
        return pick.id, note
    if serving:
        pick = next((s for s in serving if s.id == suggested), serving[0])
        return pick.id, f"{pick.id} cannot run yet: {'; '.join(pick.problems) or 'disabled or not trusted'}"
    return suggested, None
