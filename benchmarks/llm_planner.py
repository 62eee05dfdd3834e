"""Plan accuracy of the LLM planner against the deterministic planner, in one run.

    PYTHONPATH=. python benchmarks/llm_planner.py --llm smollm2 [--limit N]

Two request sets, each planned by both planners (no photo):
- compound: the selector's validation split, kind `compound` (assistant/selector/data/instructions.jsonl). A plan
  is right when its task sequence equals the label exactly. Labels of requests that state no order keep the
  order the tasks were mentioned in, which the order policy reorders on purpose (see docs/planning.md), so the
  task-set figure is printed too.
- external: benchmarks/data/external_requests.jsonl, the in-scope lines (kind other than `oos`), written by
  other projects. A plan is right when its task set equals the label.

For the LLM planner it also prints how often it fell back to the deterministic plan (of the requests it asked
the model about: a request with no candidate task never reaches the model), how many of its steps set an
amount (`mix` below 1 or `params`), and the mean seconds per request, for both planners. `--limit N` takes the
first N requests of each set, for a quick run. The model loads before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from assistant.planning import load_planner
from assistant.planning.plan import Plan
from assistant.selector.instructions import load_instructions

EXTERNAL = Path(__file__).parent / "data" / "external_requests.jsonl"


@dataclass
class Score:
    right: int = 0
    right_set: int = 0
    total: int = 0
    seconds: float = 0.0
    asked: int = 0
    fell_back: int = 0
    amounts: int = 0
    reasons: list[str] = field(default_factory=list)

    def add(self, plan: Plan, expected: list[str], seconds: float, exact: bool) -> None:
        tasks = [step.task for step in plan.steps]
        self.total += 1
        self.right_set += set(tasks) == set(expected)
        self.right += tasks == expected if exact else set(tasks) == set(expected)
        self.seconds += seconds
        if plan.source == "llm" or any("deterministic plan instead" in note for note in plan.notes):
            self.asked += 1
            if plan.source != "llm":
                self.fell_back += 1
                self.reasons.append(plan.notes[-1])
        self.amounts += sum(step.mix < 1 or bool(step.params) for step in plan.steps if plan.source == "llm")


def requests(limit: int | None) -> dict[str, list[tuple[str, list[str]]]]:
    compound = [(r.text, list(r.tasks)) for r in load_instructions(split="val") if r.kind == "compound"]
    rows = [json.loads(line) for line in EXTERNAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    external = [(r["text"], list(r["tasks"])) for r in rows if r["kind"] != "oos"]
    return {"compound": compound[:limit], "external": external[:limit]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm", default="smollm2", help="model spec, as for `diffplugin plan --llm`")
    parser.add_argument("--limit", type=int, default=None, help="first N requests of each set")
    args = parser.parse_args()
    llm = load_planner(None, args.llm)
    deterministic = llm.fallback
    llm.plan("remove the rain")  # waits for the model to load, so that the timings are planning only
    sets = requests(args.limit)
    for name, rows in sets.items():
        exact = name == "compound"
        scores = {"deterministic": Score(), args.llm: Score()}
        for text, expected in rows:
            for label, planner in (("deterministic", deterministic), (args.llm, llm)):
                started = time.perf_counter()
                plan = planner.plan(text)
                scores[label].add(plan, expected, time.perf_counter() - started, exact)
        match = "exact task sequence" if exact else "task set"
        print(f"{name} ({len(rows)} requests, {match}):")
        for label, score in scores.items():
            line = (f"  {label:>14}: {score.right}/{score.total} = {score.right / max(score.total, 1):.1%}"
                    f" (task set {score.right_set}/{score.total}); {score.seconds / max(score.total, 1):.2f} s"
                    " per request")
            if label != "deterministic":
                line += (f"; fell back on {score.fell_back}/{score.asked} asked"
                         f" ({score.fell_back / max(score.asked, 1):.1%}); steps with an amount: {score.amounts}")
            print(line)
        for reason in sorted(set(scores[args.llm].reasons))[:5]:
            print(f"    fallback: {reason[:160]}")


if __name__ == "__main__":
    main()
