"""The deterministic planner: a request (and maybe a photo) -> a Plan.

Tasks come from the Plugin-Selector. With a photo and a request that names no task ("fix this photo"), they come
from the image-degradation detector. An order the user states always wins; otherwise the order policy decides,
with its reason on each step. For each task the planner prefers a diffusion plugin whose weights are installed,
then a built-in plugin, and says which it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from assistant.planning.plan import Plan, Step
from assistant.planning.policy import OrderPolicy, user_order
from assistant.selector.clauses import joined_clauses
from registry.errors import RegistryError

#: Below this selector confidence, a step is kept but the user is told it is a guess.
LOW_CONFIDENCE = 0.6
_GENERIC = re.compile(r"\b(fix|improve|enhance|restore|clean( it)? up|repair|better|auto|whatever)\b", re.I)


@dataclass
class Planner:
    registry: Any
    selector: Any
    policy: OrderPolicy

    def plan(self, request: str, image: Any = None) -> Plan:
        selection = self.selector.select(request)
        notes = list(selection.notes)
        if selection.rejected:
            if image is not None and _GENERIC.search(request):
                return self._from_detector(request, image, notes)
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
            reason = f'you asked: "{said}"' + (f"; {reasons[task]}" if reasons.get(task) else "")
            if score < LOW_CONFIDENCE:
                notes.append(f"not sure you asked for {task} (confidence {score:.2f}); remove the step if not")
            steps.append(Step(plugin=plugin, task=task, reason=reason, confidence=round(score, 4)))
        return Plan(request=request, steps=steps, source="selector", order=how,
                    policy_version=self.policy.version if how == "policy" else None, notes=notes)

    def _from_detector(self, request: str, image: Any, notes: list[str]) -> Plan:
        from assistant.detector import detect

        findings = detect(image)
        if not findings:
            notes.append("you named no task and the photo shows no degradation the detector knows")
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
        notes.append("you named no task: the steps come from what the detector measured in the photo")
        return Plan(request=request, steps=steps, source="detector",
                    order="none" if not steps else "policy" if len(steps) > 1 else "single",
                    policy_version=self.policy.version, notes=notes)

    def _uncovered_note(self, finding: Any) -> str:
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


#: Search score (cosine similarity) from which a plugin is offered for a finding no installed plugin covers.
_SEARCH_MATCH = 0.5


def choose_plugin(registry: Any, task: str, suggested: str | None) -> tuple[str | None, str | None]:
    """The plugin to run for `task` and a note for the user: a runnable diffusion plugin, else a runnable
    built-in or other code plugin, else the suggested one (it will say why it cannot run)."""
    serving = [s for s in registry.plugins() if s.enabled and task in s.manifest.tasks]
    runnable = [s for s in serving if s.runnable]
    diffusion = [s for s in runnable if s.manifest.kind == "diffplugin"]
    if diffusion:
        pick = next((s for s in diffusion if s.id == suggested), diffusion[0])
        return pick.id, None
    if runnable:
        pick = next((s for s in runnable if s.id == suggested), runnable[0])
        missing = [s.id for s in serving if s.manifest.kind == "diffplugin"]
        note = (f"{task}: using {pick.id} (no diffusion weights installed for {', '.join(missing)}; "
                "`diffplugin models pull` gets them)") if missing else None
        return pick.id, note
    if serving:
        pick = next((s for s in serving if s.id == suggested), serving[0])
        return pick.id, f"{pick.id} cannot run yet: {'; '.join(pick.problems) or 'disabled or not trusted'}"
    return suggested, None
