"""Who runs a batch's edits: this process (`LocalWorkers`) or a Ray cluster (`RayWorkers`, in ray_workers.py).

Both take planned jobs and yield outcomes as edits finish, in whatever order they finish. They never write files:
the caller saves each result, so a failed or cancelled edit leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import PIL.Image

from assistant.error_report import describe
from assistant.planning import Plan, run_plan

if TYPE_CHECKING:
    from assistant.executor import Executor
    from plugins.progress import Progress
    from registry.store import Registry

#: What one photo's edit may raise without stopping the batch: anything but a cancellation. A bad photo or a
#: plugin that refuses to run is reported as the user's error, anything else as a bug (assistant/error_report.py).
EDIT_ERRORS = (Exception,)
#: What `--executor ray` says when Ray is not installed (checked before any work, and again where Ray loads).
RAY_MISSING = "--executor ray needs Ray: pip install 'diffplugin-assistant[ray]'"


@dataclass
class Job:
    name: str  # the photo's file name: how progress and failures are reported
    image: PIL.Image.Image
    plan: Plan


@dataclass
class Outcome:
    """A finished job: the edited photo and its plan as it ran, or the one-line error that stopped it."""

    name: str
    plan: Plan | None = None
    image: PIL.Image.Image | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    internal: bool = False  # the error is a bug: `error` says so, `log` is where its traceback went
    log: str | None = None
    details: str | None = None  # a bug's traceback, for --debug


#: Progress reporting for one photo, by its name and number of plan steps.
PhotoProgress = Callable[[str, int], "Progress"]


@dataclass(frozen=True)
class EditContext:
    """What every edit of one command shares, built once where the user's options come in (the CLI): the open
    registry, one executor (its base model loads once) and, for a terminal, each photo's progress reporting."""

    registry: Registry
    executor: Executor
    progress: PhotoProgress | None = None

    def report(self, name: str, steps: int) -> Progress | None:
        """The progress reporting of photo `name`, whose plan has `steps` steps."""
        return self.progress(name, steps) if self.progress else None


class Workers(Protocol):
    def map(self, jobs: Iterable[Job | Outcome]) -> Iterator[Outcome]:
        """Run each job; an `Outcome` among the jobs (a photo that failed before it could be planned) passes
        through."""
        ...

    def close(self) -> None: ...


def failure(name: str, err: BaseException, bug: bool | None = None) -> Outcome:
    """`err` as the failed outcome of photo `name`; `bug=False`: not a bug whatever its type (a worker died)."""
    described = describe(err, bug)
    return Outcome(name, error=described.text().splitlines()[0], internal=described.internal,
                   log=str(described.log) if described.log else None, details=described.details)


def edit(job: Job, registry: Registry, executor: Executor, progress: Progress | None = None) -> Outcome:
    """Run one job's plan; any error becomes a failed outcome (cancellation propagates)."""
    from assistant.executor import Cancelled

    try:
        result = run_plan(job.plan, job.image, registry, executor, progress)
    except Cancelled:
        raise
    except EDIT_ERRORS as err:
        return failure(job.name, err)
    return Outcome(job.name, job.plan, result.image, result.notes)


class LocalWorkers:
    """One executor in this process: the base model loads once, progress shows per denoising step."""

    def __init__(self, context: EditContext) -> None:
        self.context = context

    def map(self, jobs: Iterable[Job | Outcome]) -> Iterator[Outcome]:
        for job in jobs:
            if isinstance(job, Outcome):
                yield job
                continue
            yield edit(job, self.context.registry, self.context.executor,
                       self.context.report(job.name, len(job.plan.steps)))

    def close(self) -> None:
        pass
