"""`diffplugin batch --executor ray`: a batch spread over a Ray cluster.

One worker (a Ray actor) per GPU in the cluster, or `--workers N` of them (one CPU each where there is no GPU).
Each worker holds its own executor, so its base model stays resident across all the photos it edits. The driver
(the machine running `diffplugin batch`) plans every photo, sends pixels and plans, and writes the results it
gets back; workers never touch the output folder. Ray finds the cluster the usual way: `RAY_ADDRESS` or a
cluster started with `ray start` on this machine; with neither, it starts a local one for this batch.

Every node needs diffplugin installed, with the same plugins registered and the base model pulled, at the paths
the driver uses (`--registry`, `DIFFPLUGIN_HOME`), e.g. on a shared file system. See docs/executor.md.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from assistant.executor import DiffusionSettings
from assistant.workers import RAY_MISSING, Job, Outcome, edit, failure
from plugins.errors import DiffPluginError

#: Photos in flight per worker: one being edited, one waiting, so a worker never idles between photos.
QUEUE_PER_WORKER = 2


class RayWorkersError(DiffPluginError, ValueError):
    """Ray is missing, or the cluster cannot give the workers asked for."""


class PhotoWorker:
    """One Ray actor: an executor with its base model resident, editing one photo at a time."""

    def __init__(self, registry: str | None, settings: dict[str, Any], home: str | None) -> None:
        if home:
            os.environ["DIFFPLUGIN_HOME"] = home
        from assistant.executor import Executor
        from assistant.paths import open_registry

        self.registry = open_registry(Path(registry) if registry else None)
        self.executor = Executor(DiffusionSettings(**settings))

    def edit(self, name: str, pixels: np.ndarray, plan: dict[str, Any]) -> dict[str, Any]:
        from assistant.planning import Plan

        outcome = edit(Job(name, PIL.Image.fromarray(pixels), Plan.model_validate(plan)), self.registry,
                       self.executor)
        return {"pixels": None if outcome.image is None else np.asarray(outcome.image.convert("RGB")),
                "plan": None if outcome.plan is None else outcome.plan.to_json(), "notes": outcome.notes,
                "error": outcome.error, "internal": outcome.internal, "log": outcome.log, "details": outcome.details}


class RayWorkers:
    def __init__(self, registry: Path | None, settings: DiffusionSettings, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise RayWorkersError(RAY_MISSING) from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            try:
                with warnings.catch_warnings():  # Ray warns before it raises; the error below says it in one line
                    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
                    # log_to_driver=False: workers' logs stay in Ray's log folder, so `--json` output stays clean.
                    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
            except ConnectionError as err:  # RAY_ADDRESS names a cluster that is not there (or not reachable)
                address = os.environ.get("RAY_ADDRESS")
                where = f"RAY_ADDRESS={address}" if address else "the Ray cluster"
                raise RayWorkersError(
                    f"--executor ray: cannot reach {where} ({str(err).splitlines()[0]}); start the cluster "
                    "(`ray start --head` on its head node), fix RAY_ADDRESS, or unset it to start a Ray instance "
                    "on this machine for the batch") from None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        count = workers or max(gpus, 1)
        if gpus and count > gpus:
            raise RayWorkersError(f"--workers {count}: the Ray cluster has {gpus} GPU(s), one worker each")
        actor = ray.remote(PhotoWorker).options(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)
        home = os.environ.get("DIFFPLUGIN_HOME")
        self.actors = [actor.remote(str(registry) if registry else None, asdict(settings), home)
                       for _ in range(count)]
        self.where = f"{count} Ray worker(s) on {'GPU' if gpus else 'CPU'}"

    def map(self, jobs: Iterable[Job | Outcome]) -> Iterator[Outcome]:
        pending: dict[Any, tuple[Job, Any]] = {}
        # Interleaved, so that the first photos go one to each worker before any worker gets a second.
        free = [actor for _ in range(QUEUE_PER_WORKER) for actor in self.actors]
        for job in jobs:
            if isinstance(job, Outcome):
                yield job
                continue
            while not free:
                if not pending:
                    raise RayWorkersError("every Ray worker has died; see Ray's logs (`ray status`, "
                                          "/tmp/ray/session_latest/logs)")
                yield from self._collect(pending, free, wait_for=1)
            actor = free.pop(0)
            # Ray's stubs type an actor's methods as the plain methods, without `.remote`
            ref = actor.edit.remote(  # type: ignore[attr-defined]
                job.name, np.asarray(job.image.convert("RGB")), job.plan.to_json())
            pending[ref] = (job, actor)
        while pending:
            yield from self._collect(pending, free, wait_for=1)

    def _collect(self, pending: dict[Any, tuple[Job, Any]], free: list[Any], wait_for: int) -> Iterator[Outcome]:
        from assistant.planning import Plan

        done, _ = self.ray.wait(list(pending), num_returns=wait_for)
        for ref in done:
            job, actor = pending.pop(ref)
            try:
                reply = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as err:  # the worker died (e.g. out of memory): not reused
                self.actors = [a for a in self.actors if a is not actor]
                free[:] = [a for a in free if a is not actor]
                yield failure(job.name, err, bug=False)
                continue
            except self.ray.exceptions.RayError as err:  # its code raised
                free.append(actor)
                yield failure(job.name, getattr(err, "cause", None) or err)
                continue
            free.append(actor)
            if reply["error"] is not None:  # the log a bug went to is the worker's (on its machine)
                yield Outcome(job.name, error=reply["error"], internal=reply["internal"], log=reply["log"],
                              details=reply["details"])
                continue
            yield Outcome(job.name, Plan.model_validate(reply["plan"]), PIL.Image.fromarray(reply["pixels"]),
                          reply["notes"])

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)  # type: ignore[arg-type]  # Ray's stubs: `.remote()` may give the class itself
        if self.started:
            self.ray.shutdown()
