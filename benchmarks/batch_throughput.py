"""Batch throughput: photos per second in this process (`--executor local`) vs 1 and 2 Ray workers on this
machine (`--executor ray --workers N`), through the same worker classes `diffplugin batch` uses.

Two workloads: a diffusion plugin on the tiny random base (20 steps, 64 px: torch-bound, base resident in each
worker) and a built-in code plugin (diffplugin/dehaze-classic on 512 px photos: numpy-bound). Ray's start-up and
each worker's first load are timed apart from the steady throughput (photos after the first per worker).

    PYTHONPATH=. python benchmarks/batch_throughput.py            # 16 photos per workload
    PYTHONPATH=. python benchmarks/batch_throughput.py --photos 32 --json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import PIL.Image


def make_photos(count: int, size: int) -> list[PIL.Image.Image]:
    import skimage.data

    names = ("astronaut", "coffee", "chelsea", "rocket")
    return [PIL.Image.fromarray(getattr(skimage.data, names[i % len(names)])()).convert("RGB").resize((size, size))
            for i in range(count)]


def throughput(workers: Any, jobs: list[Any], warm: int) -> dict[str, float]:
    """Seconds for the first `warm` photos (each worker's first: loads) and photos/s for the rest."""
    start = time.perf_counter()
    finished = []
    for outcome in workers.map(jobs):
        if outcome.error:
            raise RuntimeError(outcome.error)
        finished.append(time.perf_counter() - start)
    steady = len(finished) - warm
    return {"first_photos_s": round(finished[warm - 1], 3), "total_s": round(finished[-1], 3),
            "steady_photos_per_s": round(steady / (finished[-1] - finished[warm - 1]), 3)}


def run(photos: int) -> dict[str, Any]:
    from assistant.executor import DiffusionSettings, Executor
    from assistant.paths import open_registry
    from assistant.planning import Plan, Step
    from assistant.ray_workers import RayWorkers
    from assistant.workers import EditContext, Job, LocalWorkers
    from plugins.diffplugin.plugin import TaskPlugin
    from plugins.diffplugin.tiny import make_tiny_base

    home = Path(tempfile.mkdtemp(prefix="batch-throughput-"))
    os.environ["DIFFPLUGIN_HOME"] = str(home)
    base = make_tiny_base(home / "models" / "base")
    plugin = TaskPlugin.for_base(base.unet, base.image_encoder, "derain", seed=0)
    folder = str(plugin.save_pretrained(home / "derain").resolve())
    registry = home / "registry"
    workloads = {
        "diffusion (tiny base, 64 px, 20 steps)": (Step(plugin=folder, task="derain"), 64),
        "code (dehaze-classic, 512 px)": (Step(plugin="diffplugin/dehaze-classic", task="dehaze"), 512),
    }
    settings = DiffusionSettings(short_side=64, resize="exact", judge=False)  # throughput of the plugins alone
    results: dict[str, Any] = {"photos": photos, "cpus": os.cpu_count()}
    for name, (step, size) in workloads.items():
        images = make_photos(photos, size)

        def jobs(step: Step = step, images: list[PIL.Image.Image] = images) -> list[Job]:
            return [Job(f"{i}.png", image, Plan(steps=[step])) for i, image in enumerate(images)]

        row = {"local": throughput(LocalWorkers(EditContext(open_registry(registry), Executor(settings))), jobs(), 1)}
        for count in (1, 2):
            start = time.perf_counter()
            pool = RayWorkers(registry, settings, workers=count)
            try:
                started = time.perf_counter() - start
                row[f"ray_{count}"] = {"ray_start_s": round(started, 2), **throughput(pool, jobs(), count)}
            finally:
                pool.close()
        local = row["local"]["steady_photos_per_s"]
        row["ratios"] = {f"ray_{n}_over_local": round(row[f"ray_{n}"]["steady_photos_per_s"] / local, 2)
                         for n in (1, 2)}
        row["ratios"]["ray_2_over_ray_1"] = round(row["ray_2"]["steady_photos_per_s"]
                                                  / row["ray_1"]["steady_photos_per_s"], 2)
        results[name] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = run(args.photos)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.photos} photos per workload, {results['cpus']} CPU cores")
    for name, row in results.items():
        if not isinstance(row, dict):
            continue
        print(name)
        for who in ("local", "ray_1", "ray_2"):
            r = row[who]
            start = f"ray start {r['ray_start_s']:.1f} s, " if "ray_start_s" in r else ""
            print(f"  {who:<6} {start}first photos {r['first_photos_s']:.2f} s, "
                  f"steady {r['steady_photos_per_s']:.2f} photos/s")
        print("  ratios", row["ratios"])


if __name__ == "__main__":
    main()
