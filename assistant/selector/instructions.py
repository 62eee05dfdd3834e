"""The instruction data that ships with the project (see data/README.md): requests labelled with the tasks they
ask for, in a train and a validation split. Evaluation files use the same reader (`expect` instead of `tasks`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from plugins.errors import BadInput

DATA = Path(__file__).parent / "data"
DATASET = DATA / "instructions.jsonl"
#: More hand-written training requests; train split only, written without looking at the validation lines.
EXTRA_TRAINING = DATA / "instructions_train_extra.jsonl"
#: Requests in other voices (terse, chatty, non-native, typos, slang, everyday words for each degradation) and
#: hard negatives against tasks nobody named; train split only, written without looking at any evaluation set.
#: They are examples the selector compares requests with, not training data for its encoder: training the encoder
#: on them too lost val accuracy (docs/selector.md, "More voices").
VOICES_TRAINING = DATA / "instructions_train_voices.jsonl"
#: What the encoder's adapter is trained on.
TRAINING_FILES = (DATASET, EXTRA_TRAINING)
#: The examples a trained selector compares requests with (its support bank): the training requests and the voices.
EXAMPLE_FILES = (*TRAINING_FILES, VOICES_TRAINING)
Kind = Literal["single", "compound", "oos"]


@dataclass(frozen=True)
class Instruction:
    text: str
    tasks: tuple[str, ...]
    kind: Kind
    split: Literal["train", "val"]


def load_instructions(path: str | Path = DATASET, split: str | None = None) -> list[Instruction]:
    """Rows of a JSON-lines file of `{"text", "tasks" | "expect", ["kind"], ["split"]}` objects."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise BadInput(f"cannot read {path}: {err.strerror or err}") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            tasks = data["tasks"] if "tasks" in data else data["expect"]
            if not isinstance(data["text"], str) or not isinstance(tasks, list):
                raise TypeError("text must be a string and expect a list")
            row = Instruction(data["text"], tuple(str(t) for t in tasks), data.get("kind") or kind_of(tasks),
                              data.get("split", "val"))
        except KeyError as err:
            raise BadInput(f"{path}: line {number}: no {err} field; expected "
                           '{"text": ..., "expect": [...]}') from None
        except (ValueError, TypeError) as err:
            raise BadInput(f"{path}: line {number}: expected {{\"text\": ..., \"expect\": [...]}} ({err})") from None
        if split is None or row.split == split:
            rows.append(row)
    if not rows:
        raise BadInput(f"{path}: no requests" + (f" in the {split!r} split" if split else ""))
    return rows


def training_set(paths: Iterable[str | Path] = TRAINING_FILES) -> list[Instruction]:
    """Every `train` row of the shipped files (by default those the encoder is trained on; `EXAMPLE_FILES` for the
    support bank); the validation split is never part of it."""
    return [row for path in paths for row in load_instructions(path, split="train")]


def kind_of(tasks: Iterable[str]) -> Kind:
    n = len(list(tasks))
    return "oos" if n == 0 else "single" if n == 1 else "compound"
