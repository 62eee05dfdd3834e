"""Who runs a batch's edits: this process (`LocalWorkers`) or a Ray cluster (`RayWorkers`, in ray_workers.py).

Both take planned jobs and yield outcomes as edits finish, in whatever order they finish. They never write files:
the caller saves each result, so a failed or cancelled edit leaves nothing half-written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import PIL.Image

from assistant.planning import Plan, run_plan
from registry.errors import RegistryError

#: What one photo's edit may raise without stopping the batch (a bad photo, a plugin that refuses to run).
EDIT_ERRORS = (ValueError, OSError, RuntimeError, RegistryError)
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


class Workers(Protocol):
    def map(self, jobs: Iterable[Job | Outcome]) -> Iterator[Outcome]:
        """Run each job; an `Outcome` among the jobs (a photo that failed before it could be planned) passes
        through."""
        ...

    def close(self) -> None: ...


def failure(name: str, err: BaseException) -> Outcome:
    return Outcome(name, error=str(err).splitlines()[0] if str(err) else type(err).__name__)


def edit(job: Job, registry: Any, executor: Any, progress: Any = None) -> Outcome:
    """Run one job's plan; an edit error becomes a failed outcome (cancellation and bugs propagate)."""
    try:
        result = run_plan(job.plan, job.image, registry, executor, progress)
    except EDIT_ERRORS as err:
        return failure(job.name, err)
    return Outcome(job.name, job.plan, result.image, result.notes)


class LocalWorkers:
    """One executor in this process: the base model loads once, progress shows per denoising step."""

    def __init__(self, registry: Any, executor: Any, progress: Callable[[str, int], Any] | None = None) -> None:
        self.registry, self.executor, self.progress = registry, executor, progress

    def map(self, jobs: Iterable[Job | Outcome]) -> Iterator[Outcome]:
        for job in jobs:
            if isinstance(job, Outcome):
                yield job
                continue
            progress = self.progress(job.name, len(job.plan.steps)) if self.progress else None
            yield edit(job, self.registry, self.executor, progress)

    def close(self) -> None:
        pass
