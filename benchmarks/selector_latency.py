"""Plugin-Selector latency per request with many registered plugins (CPU, after the encoder is loaded).

    python benchmarks/selector_latency.py [--plugins 100] [--requests 200]

The eight official tasks plus synthetic third-party plugins (each with five example requests of its own) make up
the candidates; requests are the validation split, one `select` call each. Prints the load time and the median,
p95 and max latency.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from assistant.selector.instructions import load_instructions
from assistant.selector.model import Candidate, OfflineSelector

TASKS = ("derain", "desnow", "dehaze", "deblur", "demoire", "highlight", "lowlight", "face")
SUBJECTS = ("sky", "portrait", "street", "forest", "document", "screen", "car", "beach", "kitchen", "stage")
EDITS = ("sharpen the edges of the", "add film grain to the", "turn into a sketch the", "colorize the old",
         "straighten the horizon of the", "remove the watermark from the", "upscale the small", "denoise the grainy",
         "add a vignette to the", "make a cartoon of the")


def candidates(count: int) -> list[Candidate]:
    found = [Candidate(f"diffplugin/{t}", t, ()) for t in TASKS]
    for n in range(count - len(found)):
        edit, subject = EDITS[n % len(EDITS)], SUBJECTS[(n // len(EDITS)) % len(SUBJECTS)]
        examples = tuple(f"{verb}{edit} {subject} photo {k}" for k, verb in
                         enumerate(("", "please ", "could you ", "I want to ", "can you ")))
        found.append(Candidate(f"community/plugin-{n}", f"{edit.split()[0]}-{n}", examples))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    started = time.perf_counter()
    selector = OfflineSelector.load(candidates(args.plugins))
    load_s = time.perf_counter() - started
    requests = [r.text for r in load_instructions(split="val")][: args.requests]
    for text in requests[:10]:  # warm-up
        selector.select(text)
    times = []
    for text in requests:
        started = time.perf_counter()
        selector.select(text)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(f"plugins={args.plugins} support examples={len(selector._support_labels)} requests={len(times)} "
          f"threads={torch.get_num_threads()}")
    print(f"load (encoder + adapter + embedding plugin examples): {load_s:.2f} s")
    print(f"select latency ms: median {statistics.median(times):.2f}  p95 {times[int(0.95 * (len(times) - 1))]:.2f}"
          f"  max {times[-1]:.2f}")


if __name__ == "__main__":
    main()
