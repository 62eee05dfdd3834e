"""Scoring a selector on labelled requests: exact-set accuracy by task, per kind of request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from assistant.selector.instructions import Instruction, Kind, kind_of
from assistant.selector.model import Selection
from plugins.progress import Progress, ProgressEvent

KINDS: tuple[Kind, ...] = ("single", "compound", "oos")


class KindScore(BaseModel):
    lines: int
    correct: int
    accuracy: float | None


class EvalReport(BaseModel):
    data: str
    by_kind: dict[str, KindScore]
    lines: list[dict[str, Any]]


def evaluate(select: Callable[[str], Selection], rows: Sequence[Instruction], data: str,
             task_of: Callable[[str], str] = str, progress: Progress | None = None) -> EvalReport:
    """A line is correct when the selected tasks equal the expected ones as a set (order is the planner's)."""
    lines = []
    for number, row in enumerate(rows, start=1):
        selection = select(row.text)
        expected = {task_of(ref) for ref in row.tasks}
        kind = kind_of(row.tasks)
        lines.append({"text": row.text, "expect": list(row.tasks), "kind": kind,
                      "correct": set(selection.tasks) == expected, **selection.to_json()})
        if progress:
            progress(ProgressEvent("evaluate", number, len(rows), row.text))
    by_kind = {}
    for kind in KINDS:
        mine = [line for line in lines if line["kind"] == kind]
        correct = sum(line["correct"] for line in mine)
        by_kind[kind] = KindScore(lines=len(mine), correct=correct,
                                  accuracy=round(correct / len(mine), 4) if mine else None)
    return EvalReport(data=data, by_kind=by_kind, lines=lines)
