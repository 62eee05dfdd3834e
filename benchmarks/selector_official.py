"""The selector on the validation split with only the eight official Diff-Plugin manifests as candidates (the
configuration of the first table in docs/selector.md; `diffplugin eval selector` uses the default registry, whose
built-in plugins add more tasks).

    python benchmarks/selector_official.py [--weights FOLDER]

Prints exact-set accuracy per kind (single-task, compound, out of scope) and every line it gets wrong.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from assistant.selector.candidates import examples_of
from assistant.selector.evaluate import evaluate
from assistant.selector.instructions import load_instructions
from assistant.selector.model import WEIGHTS, Candidate, OfflineSelector
from registry.discover import BUILTIN_MANIFESTS
from registry.manifest import load_manifest


def official_candidates() -> list[Candidate]:
    """The official manifests' plugins, known by their examples and their description's first sentence."""
    manifests = [load_manifest(p) for p in sorted(Path(BUILTIN_MANIFESTS).glob("*.yaml"))]
    return [Candidate(m.id, t, examples_of(m)) for m in manifests for t in m.tasks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=WEIGHTS, help="a trained selector folder")
    args = parser.parse_args()
    selector = OfflineSelector.load(official_candidates(), args.weights)
    val = load_instructions(split="val")
    report = evaluate(selector.select, val, "val")
    for kind, score in report.by_kind.items():
        print(f"{kind:<9} {score.accuracy:.1%} ({score.correct}/{score.lines})")
    for row in val:
        chosen = sorted(selector.select(row.text).tasks)
        if chosen != sorted(row.tasks):
            print(f"  wrong ({row.kind}): {row.text!r}: expected {list(row.tasks)}, chose {chosen}")


if __name__ == "__main__":
    main()
