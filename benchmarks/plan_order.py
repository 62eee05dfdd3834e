"""How often the plan follows an order the user stated, on the selector's validation split.

    python benchmarks/plan_order.py

Takes the compound validation requests whose tasks the selector got right and, of those, the ones that state
an order ("then", "but first", …); their labels are in execution order. Requests without a stated order are
counted but not scored: their labels keep the mentioned order, which the policy reorders on purpose.
"""

from __future__ import annotations

from assistant.planning import load_planner
from assistant.planning.policy import user_order
from assistant.selector.clauses import joined_clauses
from assistant.selector.instructions import load_instructions


def main() -> None:
    planner = load_planner()
    stated = [0, 0]
    unstated = 0
    for row in (r for r in load_instructions(split="val") if r.kind == "compound"):
        got = [step.task for step in planner.plan(row.text).steps]
        if set(got) != set(row.tasks):
            continue  # a selection error, counted in the selector's figures
        if user_order(joined_clauses(row.text)).stated:
            stated[0] += got == list(row.tasks)
            stated[1] += 1
        else:
            unstated += 1
    print(f"stated order followed: {stated[0]}/{stated[1]}; correctly selected without a stated order: {unstated}")


if __name__ == "__main__":
    main()
