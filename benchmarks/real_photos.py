"""Edit every real degraded photo the way a user would, with the judge on, and show what happened.

    python benchmarks/real_photos.py --sheet docs/results/real-photos.jpg

For each photo in tests/data/real-photos (labelled real photos from other projects; see its README): the request
its label stands for ("remove the rain", ...; photos labelled with nothing get "remove the rain", the request that
used to paint blobs over photos) and "fix this photo" (the detector's path), each planned by the shipped planner
and run with the built-in plugins through the judged executor. Prints a markdown table (what was planned, kept,
made milder, dropped), the harm count (tries the judge found worse that were kept anyway: by design 0), and writes
a contact sheet: input | result for the request | result for "fix this photo", each captioned.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image

from assistant.evaluation.sheet import SheetRow, contact_sheet
from assistant.executor import DiffusionSettings, Executor, RunResult
from assistant.paths import open_registry
from assistant.photo_output import save_result
from assistant.planning import Plan, load_planner, run_plan

FOLDER = Path(__file__).resolve().parents[1] / "tests" / "data" / "real-photos"
REQUESTS = {"haze": "remove the haze", "rain": "remove the rain", "raindrops": "remove the rain drops",
            "lowlight": "it's too dark, brighten it", "noise": "remove the noise", "blur": "it's blurry, sharpen it",
            "snow": "remove the snow", "jpeg": "remove the jpeg artefacts", "": "remove the rain"}


def describe(plan: Plan, result: RunResult | None) -> str:
    """'derain kept; lowlight at 50%; dehaze dropped' for a plan as it ran."""
    if result is None:
        return "no steps" + (f" ({plan.notes[0]})" if plan.notes else "")
    parts = [f"{s.task} kept" + (f" at {s.mix:.0%}" if s.mix < 1 else "") for s in plan.steps]
    parts += [f"{s.task} dropped" for s in plan.dropped]
    return "; ".join(parts) or "nothing"


def run(plan: Plan, image: Image.Image, registry, executor: Executor) -> RunResult | None:
    return run_plan(plan, image, registry, executor) if plan.steps else None


def harm(result: RunResult | None) -> int:
    """Kept tries that the judge found worse (the executor must never keep one)."""
    if result is None:
        return 0
    # A kept try has a calibrated chance under 50% or a damage reason only if the loop kept a worse result.
    return sum(t.verdict == "kept" and t.better is not None and (t.better < 0.5 or bool(t.reasons))
               for o in result.outcomes for t in o.tries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--sheet", type=Path, help="write the contact sheet here (.jpg or .png)")
    args = parser.parse_args()
    registry = open_registry(None)
    planner = load_planner()
    executor = Executor(DiffusionSettings(judge=True))
    rows, sheet, harmed = [], [], 0
    for label in csv.DictReader((args.folder / "labels.csv").open()):
        image = Image.open(args.folder / label["file"]).convert("RGB")
        request = REQUESTS[label["degradations"]]
        asked = planner.plan(request, image)
        asked_result = run(asked, image, registry, executor)
        fix = planner.plan("fix this photo", image)
        fix_result = run(fix, image, registry, executor)
        harmed += harm(asked_result) + harm(fix_result)
        found = ", ".join(s.task for s in [*fix.steps, *fix.dropped]) or "nothing"
        rows.append(f"| {label['file']} | {label['degradations'] or '—'} | "
                    f"\"{request}\": {describe(asked, asked_result)} | {found}: {describe(fix, fix_result)} |")
        tiles = [(image, f"{label['file'][:34]} [{label['degradations'] or 'nothing'}]"),
                 (asked_result.image if asked_result else image, describe(asked, asked_result)[:48]),
                 (fix_result.image if fix_result else image, f"fix: {describe(fix, fix_result)}"[:48])]
        sheet.append(SheetRow(label["file"], tiles))
    print("| photo | label | the request for its label | \"fix this photo\": found, then |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nharm count (tries judged worse and kept): {harmed}")
    if args.sheet:
        save_result(contact_sheet(sheet, tile_height=120), args.sheet)
        print(f"wrote {args.sheet}")


if __name__ == "__main__":
    main()
