"""`diffplugin eval orders`: measure which step order restores a photo best, instead of guessing.

For every combination of two or more (up to `max_steps`) of the given degradations, each clean photo is degraded
with them (in the order given, e.g. haze then rain), then every order of the matching plugins runs and each
result is scored against the clean photo. The pairwise table says, for each pair of tasks, how often A-then-B
beats B-then-A on the photos with exactly those two degradations, and by how much. `policy_from` turns a clear
result into an order-policy rule, keeping the literature's rules for pairs with no clear result.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image

from assistant.evaluation.metrics import psnr_ssim
from plugins.data.degradations import TASK_OF_DEGRADATION, degrade, validate_names
from plugins.errors import DiffPluginError
from plugins.progress import Progress, ProgressEvent

if TYPE_CHECKING:
    from assistant.executor import Executor
    from assistant.planning.policy import OrderPolicy
    from registry.store import Registry

#: The task that undoes each degradation here (one no task undoes is left out); noise has a built-in plugin
#: (denoise) though no Diff-Plugin task.
TASK_FOR = {name: task for name, task in {**TASK_OF_DEGRADATION, "noise": "denoise"}.items() if task is not None}
#: A measured rule needs at least this many photos, this share of wins, and this mean PSNR margin.
MIN_PHOTOS = 3
MIN_WIN_SHARE = 0.75
MIN_MARGIN_DB = 0.1


class OrderEvalError(DiffPluginError, ValueError):
    pass


@dataclass(frozen=True)
class OrderRun:
    photo: str
    degradations: tuple[str, ...]
    order: tuple[str, ...]  # tasks, in the order they ran
    psnr: float
    ssim: float

    def to_json(self) -> dict[str, Any]:
        return {"photo": self.photo, "degradations": list(self.degradations), "order": list(self.order),
                "psnr": round(self.psnr, 4), "ssim": round(self.ssim, 4)}


@dataclass
class PairEvidence:
    first: str  # A, in alphabetical order: the figures are for A-then-B against B-then-A
    then: str
    photos: int
    wins: int  # photos where A-then-B scored a higher PSNR
    losses: int
    mean_db: float  # mean of PSNR(A-then-B) - PSNR(B-then-A)
    mean_ssim: float

    @property
    def verdict(self) -> tuple[str, str] | None:
        """(first, then) when the evidence is clear, else None."""
        if self.photos < MIN_PHOTOS or abs(self.mean_db) < MIN_MARGIN_DB:
            return None
        if self.wins >= MIN_WIN_SHARE * self.photos and self.mean_db > 0:
            return self.first, self.then
        if self.losses >= MIN_WIN_SHARE * self.photos and self.mean_db < 0:
            return self.then, self.first
        return None

    def to_json(self) -> dict[str, Any]:
        verdict = self.verdict
        return {"a": self.first, "b": self.then, "photos": self.photos, "a_then_b_wins": self.wins,
                "b_then_a_wins": self.losses, "mean_psnr_gain_db": round(self.mean_db, 4),
                "mean_ssim_gain": round(self.mean_ssim, 4),
                "verdict": f"{verdict[0]} before {verdict[1]}" if verdict else "no clear winner"}


@dataclass
class OrderEvidence:
    degradations: list[str]
    plugins: dict[str, str]  # task -> plugin id@version
    photos: list[str]
    seed: int
    runs: list[OrderRun] = field(default_factory=list)

    def pairs(self) -> list[PairEvidence]:
        table = []
        for a, b in itertools.combinations(sorted({TASK_FOR[d] for d in self.degradations}), 2):
            gains, ssim_gains = [], []
            for photo in self.photos:
                runs = {r.order: r for r in self.runs if r.photo == photo and set(r.order) == {a, b}}
                if (a, b) in runs and (b, a) in runs:
                    gains.append(runs[(a, b)].psnr - runs[(b, a)].psnr)
                    ssim_gains.append(runs[(a, b)].ssim - runs[(b, a)].ssim)
            if gains:
                table.append(PairEvidence(a, b, len(gains), sum(g > 0 for g in gains), sum(g < 0 for g in gains),
                                          float(np.mean(gains)), float(np.mean(ssim_gains))))
        return table

    def best_orders(self) -> list[dict[str, Any]]:
        """Per combination of degradations: each order's mean PSNR over the photos, best first."""
        rows = []
        for combo in dict.fromkeys(r.degradations for r in self.runs):
            orders = dict.fromkeys(r.order for r in self.runs if r.degradations == combo)
            means = {order: float(np.mean([r.psnr for r in self.runs if r.degradations == combo and r.order == order]))
                     for order in orders}
            ranked = sorted(means.items(), key=lambda item: -item[1])
            rows.append({"degradations": list(combo),
                         "orders": [{"order": list(o), "mean_psnr": round(p, 4)} for o, p in ranked]})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"degradations": self.degradations, "plugins": self.plugins, "photos": self.photos, "seed": self.seed,
                "pairs": [p.to_json() for p in self.pairs()], "best_orders": self.best_orders(),
                "runs": [r.to_json() for r in self.runs]}


def evaluate_orders(photos: Sequence[tuple[str, PIL.Image.Image]], degradations: Sequence[str], registry: Registry,
                    executor: Executor, seed: int = 0, max_steps: int = 3,
                    progress: Progress | None = None) -> OrderEvidence:
    from assistant.planning.planner import choose_plugin

    names = validate_names(list(degradations))
    if len(set(names)) != len(names) or len(names) < 2:
        raise OrderEvalError("give at least two different degradations, e.g. --degradations rain,haze")
    untaskable = [d for d in names if TASK_FOR.get(d) is None]
    if untaskable:
        raise OrderEvalError(f"no plugin task undoes {', '.join(untaskable)}; choose from "
                             f"{', '.join(d for d, t in TASK_FOR.items() if t)}")
    plugins, labels = {}, {}
    for name in names:
        task = TASK_FOR[name]
        plugin_id, _ = choose_plugin(registry, task, None)
        status = registry.get(plugin_id) if plugin_id else None
        if plugin_id is None or status is None or not status.runnable:
            raise OrderEvalError(f"no runnable plugin for {task}; `diffplugin plugins list` shows why")
        plugins[task] = executor.load(plugin_id, registry)
        labels[task] = f"{plugin_id}@{status.active.version}"
    combos = [c for size in range(2, min(len(names), max_steps) + 1) for c in itertools.combinations(names, size)]
    total = len(photos) * sum(len(list(itertools.permutations(c))) for c in combos)
    evidence = OrderEvidence(names, labels, [name for name, _ in photos], seed)
    done = 0
    for index, (photo_name, clean) in enumerate(photos):
        for combo in combos:
            degraded = degrade(clean, combo, seed=seed + index)
            for order in itertools.permutations([TASK_FOR[d] for d in combo]):
                if progress:
                    progress(ProgressEvent("evaluate", done, total, f"{photo_name}: {' -> '.join(order)}"))
                restored = executor.run(degraded, [plugins[t] for t in order]).image
                psnr, ssim = psnr_ssim(restored, clean)
                evidence.runs.append(OrderRun(photo_name, combo, order, psnr, ssim))
                done += 1
    if progress:
        progress(ProgressEvent("evaluate", total, total, "done"))
    return evidence


def policy_from(evidence: OrderEvidence, current: OrderPolicy) -> OrderPolicy:
    """A new policy: measured rules where the evidence is clear, the current rules elsewhere."""
    from assistant.planning.policy import OrderPolicy, Rule

    today = date.today().isoformat()
    measured: dict[frozenset[str], Rule] = {}
    unclear: dict[frozenset[str], PairEvidence] = {}
    for pair in evidence.pairs():
        key = frozenset((pair.first, pair.then))
        verdict = pair.verdict
        if verdict is None:
            unclear[key] = pair
            continue
        first, then = verdict
        wins = pair.wins if first == pair.first else pair.losses
        margin = abs(pair.mean_db)
        plugins = ", ".join(evidence.plugins[t] for t in (first, then))
        measured[key] = Rule(
            first=first, then=then,
            reason=f"measured: {first} then {then} scored higher on {wins} of {pair.photos} photos "
                   f"(+{margin:.2f} dB PSNR on average)",
            provenance=f"diffplugin eval orders, {today}: photos {', '.join(evidence.photos)}; plugins {plugins}; "
                       f"synthetic {', '.join(evidence.degradations)} (seed {evidence.seed})")
    rules = []
    for rule in current.rules:
        key = frozenset((rule.first, rule.then))
        if key in measured:
            continue  # replaced by the measurement, whichever way it points
        if key in unclear:
            pair = unclear[key]
            rule = rule.model_copy(update={"provenance": f"{rule.provenance}; measured {today}: no clear winner "
                                                         f"({pair.wins}-{pair.losses} of {pair.photos} photos, "
                                                         f"{pair.mean_db:+.2f} dB for {pair.first} first)"})
        rules.append(rule)
    rules += list(measured.values())
    suffix = "measured" if measured else "literature"
    return OrderPolicy(version=f"{today.replace('-', '.')}-{suffix}", rules=rules,
                       adjustments_last=current.adjustments_last)
