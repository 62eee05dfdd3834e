"""The order policy: which restoration step runs before which when the user does not say (order_policy.yaml)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, Field

from plugins.tasks import RESTORATION  # tasks that restore a degradation; the rest are adjustments

POLICY_FILE = Path(__file__).parent / "order_policy.yaml"


class Rule(BaseModel):
    first: str
    then: str
    reason: str
    provenance: str = "literature"


class OrderPolicy(BaseModel):
    version: str
    rules: list[Rule] = Field(default_factory=list)
    adjustments_last: bool = True

    @classmethod
    def load(cls, path: str | Path | None = None) -> OrderPolicy:
        """`path`, else the one `diffplugin eval orders --write-policy` wrote in the data folder, else the
        shipped file."""
        if path is None:
            path = user_policy_file() if user_policy_file().is_file() else POLICY_FILE
        return cls.model_validate(yaml.safe_load(Path(path).read_text(encoding="utf-8")))

    def order(self, tasks: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """`tasks` (in the order named) sorted so that every rule between them holds; ties keep the named order.
        Returns the order and, per task, the reason it sits where it does."""
        present = list(dict.fromkeys(tasks))
        rules = [r for r in self.rules if r.first in present and r.then in present]
        if self.adjustments_last:
            rules += [Rule(first=a, then=b, reason="restoration runs before adjustments", provenance="policy")
                      for a in present if a in RESTORATION for b in present if b not in RESTORATION]
        ordered: list[str] = []
        remaining = list(present)
        while remaining:
            free = [t for t in remaining if not any(r.then == t and r.first in remaining for r in rules)]
            pick = free[0] if free else remaining[0]  # a cycle in the file: keep the named order
            ordered.append(pick)
            remaining.remove(pick)
        reasons = {}
        for task in ordered:
            after = [r for r in rules if r.then == task]
            reasons[task] = "; ".join(f"after {r.first}: {r.reason}" for r in after)
        return ordered, reasons


@dataclass(frozen=True)
class UserOrder:
    """The order the user stated, if they stated one: clause indices in execution order."""

    clauses: list[int]
    stated: bool


_SEQUENCE = ("then", "after that", "afterwards", "next", "followed by", "once", "finally", "first")
_ORDER_WORDS = re.compile(r"\b(start (by|with)|to start|in that order|in this order|next|last|afterwards|after that|"
                          r"then|finally)\b")


def user_order(joined: Sequence[tuple[str, str]]) -> UserOrder:
    """Execution order of the clauses from the joining words and order phrases ("…, but first …", "… before
    that …", "… should come first", "…, then …", "in that order")."""
    order: list[int] = []
    stated = False
    for k, (joiner, clause) in enumerate(joined):
        text = clause.lower()
        if joiner.endswith("first") and k > 0:  # "brighten it, but first get rid of the fog"
            order.insert(0, k)
            stated = True
        elif joiner == "before that" or text.endswith(("beforehand", "first")) or "come first" in text:
            order.insert(max(len(order) - 1, 0) if joiner == "before that" else 0, k)
            stated = True
        else:
            order.append(k)
            stated = (stated or any(joiner.startswith(word) or joiner.endswith(word) for word in _SEQUENCE)
                      or bool(_ORDER_WORDS.search(text)))
    return UserOrder(order, stated)


POLICY_HEADER = """\
# The order in which restoration steps run when the user does not say.
# Each rule says that `first` should run before `then`, why, and where that comes from: "measured" rules were
# written by `diffplugin eval orders --write-policy` from the evidence their provenance names; the others come
# from the literature and stay until a measurement decides their pair.
"""


def user_policy_file() -> Path:
    from assistant.paths import data_dir

    return data_dir() / "order_policy.yaml"


def write_policy_file(policy: OrderPolicy, path: Path, overwrite: bool = True) -> Path:
    from assistant.photo_output import save_text

    body = yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=118)
    return save_text(path, POLICY_HEADER + body, overwrite)
