"""One progress report for every long job (an edit, a download, a training, an evaluation, an index build), so
that a terminal bar or the chat's bars take the same callback whatever reports to them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

#: What is happening. An edit reports 'step' (plan step `done` of `total` starts), 'denoise' (`denoise` of
#: `denoise_total` denoising steps of the step `done` are done), 'check' (the judge's verdict on a try) and 'done';
#: the other jobs report their unit of work: 'download' (bytes), 'train' (optimiser steps), 'evaluate' (photos or
#: examples), 'embed' (index texts), 'degrade' (photos of a made dataset), 'photo' (photos of a batch).
ProgressKind = Literal["step", "denoise", "check", "done", "download", "train", "evaluate", "embed", "degrade",
                       "photo"]


@dataclass(frozen=True)
class ProgressEvent:
    """`done` of `total` units of `kind` (`total` is None while unknown, e.g. a download without a length);
    `what` names the thing being worked on (a plugin or task, a file, a photo). `denoise` and `denoise_total`
    only come with 'denoise', `loss` only with 'train'."""

    kind: ProgressKind
    done: int
    total: int | None
    what: str = ""
    denoise: int = 0
    denoise_total: int = 0
    loss: float | None = None


Progress = Callable[[ProgressEvent], None]
