"""How many CPU threads PyTorch and OpenCV use. No heavy imports: a command that never loads torch pays nothing."""

from __future__ import annotations

import os
import sys

from plugins.errors import BadInput

#: Environment variable for the CPU thread count (the CLI's --threads sets the same).
THREADS_ENV = "DIFFPLUGIN_THREADS"


def default_threads() -> int:
    """One per CPU this process may use that is not already busy (by the one-minute load average), at least one.
    OpenMP threads spin while they wait for each other, so a thread whose core another process holds stalls every
    operation: on the 2-core machine two threads were 2.4x faster than one on an idle machine but 1.1-1.7x slower
    with one other busy process (benchmarks/threads.py, docs/benchmarks.md)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, cpus - busy)


def use_cpu_threads(threads: int | None = None) -> int:
    """Set the CPU thread count of PyTorch and OpenCV, where they are imported: `threads`, else
    $DIFFPLUGIN_THREADS, else what OMP_NUM_THREADS asks for, else `default_threads()`. Returns the count."""
    chosen = threads or _env_threads(THREADS_ENV) or _env_threads("OMP_NUM_THREADS") or default_threads()
    torch, cv2 = sys.modules.get("torch"), sys.modules.get("cv2")  # set where loaded; call again after loading
    if torch is not None and torch.get_num_threads() != chosen:
        torch.set_num_threads(chosen)
    if cv2 is not None:
        cv2.setNumThreads(chosen)
    return chosen


def _env_threads(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise BadInput(f"${name}={value!r}: give a whole number of threads, 1 or more")
    return int(value)
