"""How many PyTorch threads to use: per-call time of small and large CPU work with 1..N threads, on an idle
machine and with every core but one kept busy by other processes (a batch beside a chat, a CI job beside an edit).

    python benchmarks/threads.py                 # threads 1..cpu_count, idle and loaded, interleaved

OpenMP threads spin while they wait for each other; when another process holds a core, the waiting thread can
lose a whole scheduler slice, and small operations get orders of magnitude slower. Prints the median time per
call for each thread count and load, and each one's ratio to one thread under the same load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def _work() -> dict[str, Callable[[], None]]:
    generator = torch.Generator().manual_seed(0)
    tiny_x, tiny_w = torch.randn(1, 8, 32, 32, generator=generator), torch.randn(8, 8, 3, 3, generator=generator)
    unet_x = torch.randn(1, 320, 64, 64, generator=generator)
    unet_w = torch.randn(320, 320, 3, 3, generator=generator)
    image = torch.rand(3, 768, 1024, generator=generator)
    return {
        "tiny conv (8 ch, 32 px)": lambda: F.conv2d(tiny_x, tiny_w, padding=1),
        "SD conv (320 ch, 64 px)": lambda: F.conv2d(unet_x, unet_w, padding=1),
        "0.8 Mpx photo filter": lambda: F.avg_pool2d(image[None], 5, 1, 2),
    }


def _median_ms(function: Callable[[], None], budget_s: float) -> float:
    function()
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(times) < 5:
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=1.5, help="Seconds of timing per cell.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds (medians of the rounds).")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    counts = list(range(1, cpus + 1)) if cpus <= 4 else [1, 2, cpus // 2, cpus]
    work = _work()
    results: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        for load in ("idle", "loaded"):
            stop = multiprocessing.Event()
            busy = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(cpus - 1 if load == "loaded"
                                                                                       else 0)]
            for process in busy:
                process.start()
            try:
                for threads in counts:
                    torch.set_num_threads(threads)
                    for name, function in work.items():
                        results.setdefault((load, name, threads), []).append(_median_ms(function, args.budget))
            finally:
                stop.set()
                for process in busy:
                    process.join()
    print(f"{cpus} CPUs; 'loaded': {cpus - 1} other processes each keep a core busy\n")
    print("| load | work | " + " | ".join(f"{t} thread{'s' * (t > 1)}" for t in counts) + " |")
    print("|---|---|" + "---:|" * len(counts))
    for load in ("idle", "loaded"):
        for name in work:
            one = statistics.median(results[(load, name, 1)])
            cells = []
            for threads in counts:
                ms = statistics.median(results[(load, name, threads)])
                cells.append(f"{ms:.3f} ms" + ("" if threads == 1 else f" ({ms / one:.2f}x)"))
            print(f"| {load} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
