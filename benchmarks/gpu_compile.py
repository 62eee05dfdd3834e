"""Seconds per photo on CUDA for one Task-Plugin (SD-1.x-shaped random weights, fp16, 512 px, 20 steps) under
the ways PyTorch can speed the denoiser up: eager with the SCB's residuals batched over the schedule (the
default) and per step, channels-last, `torch.compile` of the UNet and the SCB (default mode), and the pipeline's
`compile_denoiser` (CUDA graphs over one whole denoiser call, SCB included), also with the SCB batched outside
the graph. The compiled and the batched outputs are then compared with eager per-step's. Each mode runs in this
one process, in turn.

    PYTHONPATH=. python benchmarks/gpu_compile.py --json-out gpu_compile.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.executor_speed import photo
from plugins.diffplugin import pipeline
from plugins.diffplugin.plugin import TaskPlugin
from plugins.diffplugin.tiny import make_sd1_shaped_base


def edit(pipe: Any, plugin: TaskPlugin, image: Any) -> Any:
    return pipe(image, plugin, num_inference_steps=20, generator=torch.Generator().manual_seed(0), short_side=512,
                resize_mode="exact").images[0]


def seconds(pipe: Any, plugin: TaskPlugin, image: Any, repeats: int, warmup: int) -> dict[str, float]:
    start = time.perf_counter()
    for _ in range(warmup):
        edit(pipe, plugin, image)
    warm = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        edit(pipe, plugin, image)
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "best_s": round(min(times), 4),
            "warmup_s": round(warm, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    pipe = make_sd1_shaped_base().to("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    plugin = TaskPlugin.for_base(pipe.unet, pipe.image_encoder, "derain", seed=0)
    for conv in plugin.scb.controlnet_down_blocks:  # zero-initialised by design; random so the SCB acts
        conv.reset_parameters()
    plugin.to("cuda", torch.float16)
    image = photo(512)
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def record(name: str, warmup: int) -> None:
        results[name] = seconds(pipe, plugin, image, args.repeats, warmup)
        print(f"{name:<28} {results[name]}", flush=True)
        if args.json_out:
            args.json_out.write_text(json.dumps(results, indent=2) + "\n")

    record("eager", 1)
    pipe.scb_batch = 1
    record("eager_per_step_scb", 1)
    per_step = np.asarray(edit(pipe, plugin, image), dtype=np.float64)
    pipe.scb_batch = None
    batched = np.asarray(edit(pipe, plugin, image), dtype=np.float64)
    results["batched_vs_per_step_max_abs_diff"] = float(np.abs(batched - per_step).max())
    pipe.unet.to(memory_format=torch.channels_last)
    plugin.scb.to(memory_format=torch.channels_last)
    record("eager_channels_last", 1)
    unet, scb = pipe.unet, plugin.scb
    pipe.unet, plugin.scb = torch.compile(unet), torch.compile(scb)
    record("compiled", 2)
    torch._dynamo.reset()
    pipe.unet, plugin.scb = unet, scb
    pipe.compile_denoiser()  # also sets scb_batch = 1: the SCB runs inside the graph at every step
    record("compiled_step_cuda_graphs", 3)
    compiled = np.asarray(edit(pipe, plugin, image), dtype=np.float64)
    pipe.scb_batch = None  # the SCB batched and eager, the graph holding only the UNet
    try:
        record("compiled_step_cuda_graphs_batched_scb", 3)
    except Exception as err:  # never run before a GPU was lent: record why it failed, keep the other figures
        results["compiled_step_cuda_graphs_batched_scb"] = {"error": repr(err)}
        print(f"compiled_step_cuda_graphs_batched_scb failed: {err!r}", flush=True)
    pipe.denoiser, pipe.scb_batch = pipeline.predict_noise, 1
    eager = np.asarray(edit(pipe, plugin, image), dtype=np.float64)
    results["compiled_vs_eager_max_abs_diff"] = float(np.abs(compiled - eager).max())
    results["compiled_vs_eager_mean_abs_diff"] = round(float(np.abs(compiled - eager).mean()), 4)
    print(results, flush=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
