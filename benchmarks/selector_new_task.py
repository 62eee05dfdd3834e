"""How well the offline selector finds a plugin for a task it was never trained on, from the five example
requests in that plugin's manifest alone (what a third-party plugin gets at install).

    python benchmarks/selector_new_task.py [--task demoire] [--steps 100]

Trains a selector on the shipped training split without any request for TASK (a few minutes on CPU), then
evaluates on the validation split with the eight official manifests as candidates: TASK's plugin is known only
through its manifest's examples and the first sentence of its description. Prints exact-set accuracy per kind,
and for the requests that ask for TASK.
"""

from __future__ import annotations

import argparse
import tempfile

from selector_official import official_candidates  # benchmarks/ is the script's own folder

from assistant.selector.evaluate import evaluate
from assistant.selector.instructions import load_instructions, training_set
from assistant.selector.model import OfflineSelector
from assistant.selector.train import SelectorTrainConfig, train_selector


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="demoire")
    parser.add_argument("--steps", type=int, default=SelectorTrainConfig().steps)
    args = parser.parse_args()
    rows = [r for r in training_set() if args.task not in r.tasks]
    candidates = official_candidates()
    val = load_instructions(split="val")
    with tempfile.TemporaryDirectory() as folder:
        train_selector(SelectorTrainConfig(steps=args.steps), rows, folder)
        selector = OfflineSelector.load(candidates, folder)
        report = evaluate(selector.select, val, "val")
        mine = evaluate(selector.select, [r for r in val if args.task in r.tasks], f"val asking for {args.task}")
    examples = next(c.examples for c in candidates if c.task == args.task)
    print(f"held out: {args.task} ({len(training_set()) - len(rows)} training requests removed); "
          f"its plugin is known by {len(examples)} manifest examples (with its description's first sentence)")
    for kind, score in report.by_kind.items():
        print(f"all val   {kind:<9} {score.accuracy:.1%} ({score.correct}/{score.lines})")
    for kind, score in mine.by_kind.items():
        if score.lines:
            print(f"{args.task:<9} {kind:<9} {score.accuracy:.1%} ({score.correct}/{score.lines})")


if __name__ == "__main__":
    main()
