"""What the executor's choices cost, measured in one run on one machine, all through `assistant.executor`.

* seconds per photo: one Task-Plugin (20 steps) vs the bare base (the same UNet loop, VAE and scheduler with no
  plugin and a fixed prompt);
* a plugin switch with the base resident (plugin loaded from disk, and from the LRU cache) vs a cold start
  (base and plugin loaded from disk, as a fresh process or the official demo's per-call SCB reload does);
* a 3-plugin chain (20 + 3 + 3 steps) vs one plugin: the official chain (decode and re-encode between plugins,
  CLIP tokens of the original), latents passed on (`chain_latents`), CLIP tokens per step (`chain_clip=current`),
  and the judge (each step decoded and judged);
* on CUDA, optionally: the UNet under `torch.compile` (`--compile`), and a real out-of-memory error and recovery
  (`--oom`: the process is capped to a small share of GPU memory, then a huge photo is asked for).

Random weights (nothing is downloaded): the tiny test base by default, or SD-1.4's UNet and VAE with CLIP
ViT-L/14 at their real sizes (`--sd`). Pictures are meaningless; timings are real.

    PYTHONPATH=. python benchmarks/executor_speed.py                       # CPU, tiny base, 64 px
    PYTHONPATH=. python benchmarks/executor_speed.py --sd --compile --oom  # GPU: SD-1.x shapes, fp16, 512 px
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from assistant.executor import DiffusionSettings, Executor, OutOfMemory
from plugins.diffplugin.hardware import default_dtype, pick_device
from plugins.diffplugin.plugin import TaskPlugin

TASKS = ("derain", "dehaze", "lowlight")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sd", action="store_true", help="SD-1.x-shaped random weights (default: the tiny base)")
    parser.add_argument("--device", default=None, help="default: CUDA, then MPS, then CPU")
    parser.add_argument("--size", type=int, default=None, help="photo side in px (512 with --sd, else 64)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the first plugin")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (5 on CUDA, 3 on CPU)")
    parser.add_argument("--compile", action="store_true", help="also time the UNet under torch.compile")
    parser.add_argument("--oom", action="store_true", help="CUDA: provoke a real out-of-memory error")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def photo(size: int) -> PIL.Image.Image:
    import skimage.data

    return PIL.Image.fromarray(skimage.data.astronaut()).convert("RGB").resize((size, size), PIL.Image.BICUBIC)


def seconds(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median and best of `repeats` timed calls after one warm-up (results are PIL images, so the device has
    finished when a call returns)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median_s": round(statistics.median(times), 4), "best_s": round(min(times), 4)}


def once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 4)


def make_plugins(pipe: Any, folder: Path) -> list[Path]:
    """One random plugin per task, saved as plugin folders; the zero convs get weights so the SCB does work."""
    folders = []
    for seed, task in enumerate(TASKS):
        plugin = TaskPlugin.for_base(pipe.unet, pipe.image_encoder, task, seed=seed)
        with torch.no_grad():
            for conv in plugin.scb.controlnet_down_blocks:
                conv.reset_parameters()
        folders.append(plugin.save_pretrained(folder / task))
    return folders


@torch.no_grad()
def base_only(pipe: Any, image: PIL.Image.Image, steps: int) -> PIL.Image.Image:
    """The same work as one plugin minus the plugin: VAE encode, `steps` UNet calls with a fixed 256-token
    prompt, VAE decode."""
    device, dtype = pipe.device, pipe.unet.dtype
    pixels = pipe.image_processor.preprocess(image).to(device)
    cond = pipe.encode_condition(pixels).to(dtype)
    prompt = torch.zeros(1, 256, pipe.unet.config.cross_attention_dim, device=device, dtype=dtype)
    pipe.scheduler.set_timesteps(steps, device=device)
    latents = torch.randn_like(cond)
    for t in pipe.scheduler.timesteps:
        noise = pipe.unet(pipe.scheduler.scale_model_input(latents, t), t, encoder_hidden_states=prompt).sample
        latents = pipe.scheduler.step(noise, t, latents).prev_sample
    return pipe.image_processor.postprocess(pipe.decode(latents))[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from plugins.diffplugin.tiny import make_sd1_shaped_base, make_tiny_base

    device = pick_device(args.device)
    cuda = device.type == "cuda"
    size = args.size or (512 if args.sd else 64)  # the tiny VAE downsamples by 2 only: 64 px is a 32x32 latent
    repeats = args.repeats or (5 if cuda else 3)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu", "dtype": str(default_dtype(device)),
        "base": "sd1-shaped" if args.sd else "tiny", "size": size, "steps": args.steps, "repeats": repeats,
        "torch": torch.__version__}
    report = _reporter(results, args.json_out)
    work = Path(tempfile.mkdtemp(prefix="executor-speed-"))
    image = photo(size)

    base = make_sd1_shaped_base() if args.sd else make_tiny_base()
    base.to(dtype=default_dtype(device))
    base.save_pretrained(work / "base")
    folders = make_plugins(base, work)
    del base

    def fresh(**options: Any) -> Executor:
        options.setdefault("judge", False)  # the pipeline's own cost; the judged chain is measured on its own
        return Executor(DiffusionSettings(base=str(work / "base"), device=str(device), steps=args.steps,
                                          short_side=size, resize="exact", **options))

    def edit(executor: Executor, refs: list[Path]) -> PIL.Image.Image:
        return executor.run(image, [executor.load(str(ref), None) for ref in refs]).image

    # Cold: a new executor loads the base and the plugin from disk, then edits (what a fresh process pays).
    results["cold_start_s"] = once(lambda: edit(fresh(), folders[:1]))
    report("cold start (base + plugin from disk, one edit)", results["cold_start_s"])

    executor = fresh()
    edit(executor, folders[:1])
    pipe = executor.base()
    results["single_plugin"] = seconds(lambda: edit(executor, folders[:1]), repeats)
    report("one plugin, base resident, plugin cached", results["single_plugin"])
    results["base_only"] = seconds(lambda: base_only(pipe, image, args.steps), repeats)
    report("base alone (no plugin)", results["base_only"])

    executor.plugins.max_bytes = 0  # nothing stays cached: every load reads the plugin from disk
    executor.plugins.clear()
    results["switch_from_disk"] = seconds(lambda: edit(executor, folders[1:2]), repeats)
    report("switch plugin, base resident, plugin from disk", results["switch_from_disk"])
    executor.plugins.max_bytes = 10 * 2**30
    load = lambda: executor.load(str(folders[1]), None)  # noqa: E731
    load()
    results["plugin_load_from_cache_s"] = seconds(load, repeats)["median_s"]
    executor.plugins.max_bytes = 0
    executor.plugins.clear()
    results["plugin_load_from_disk_s"] = seconds(load, repeats)["median_s"]
    executor.plugins.max_bytes = 10 * 2**30
    report("plugin load: cache / disk", (results["plugin_load_from_cache_s"], results["plugin_load_from_disk_s"]))

    resident = executor.settings
    for name, options in {"chain3_official": {"judge": False},
                          "chain3_latents": {"judge": False, "chain_latents": True},
                          "chain3_clip_current": {"judge": False, "chain_clip": "current"},
                          "chain3_judged": {"judge": True}}.items():
        executor.settings = replace(resident, **options)
        results[name] = seconds(lambda: edit(executor, folders), repeats)
        if options.get("judge"):  # random weights: steps get judged worse and tried milder, costing calls
            results[name]["notes"] = executor.run(image, [executor.load(str(f), None) for f in folders]).notes
        report(f"3-plugin chain, {name.removeprefix('chain3_')}", results[name])
    executor.settings = resident
    from assistant.judge import look

    results["judge_look_s"] = seconds(lambda: look(image), repeats)["median_s"]
    report("the judge's measures of one photo", results["judge_look_s"])

    if args.oom and cuda:
        results["oom"] = provoke_oom(executor, folders[:1], image, size)
        report("out of memory", results["oom"])
    if args.compile and cuda:
        start = time.perf_counter()
        pipe.unet = torch.compile(pipe.unet)
        edit(executor, folders[:1])
        results["compile_s"] = round(time.perf_counter() - start, 1)
        results["single_plugin_compiled_unet"] = seconds(lambda: edit(executor, folders[:1]), repeats)
        report("one plugin, compiled UNet", results["single_plugin_compiled_unet"])

    return results


def provoke_oom(executor: Executor, refs: list[Path], image: PIL.Image.Image, size: int) -> dict[str, Any]:
    """Cap the process at 6 GiB, ask for a 4096 px photo (expect `OutOfMemory`), lift the cap, edit again."""
    outcome: dict[str, Any] = {}
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(6 * 2**30 / total)
    executor.settings.short_side = 4096
    plugins = [executor.load(str(ref), None) for ref in refs]
    try:
        executor.run(image, plugins)
        outcome["raised"] = None
    except OutOfMemory as err:
        outcome["raised"] = str(err)
    torch.cuda.set_per_process_memory_fraction(1.0)
    executor.settings.short_side = size
    result = executor.run(image, plugins).image
    outcome["edit_after_s"] = once(lambda: executor.run(image, plugins))
    outcome["usable_after"] = result.size == image.size and bool(np.isfinite(np.asarray(result, float)).all())
    return outcome


def _reporter(results: dict[str, Any], path: Path | None) -> Callable[[str, Any], None]:
    def report(label: str, value: Any) -> None:
        print(f"{label:<52} {value}", flush=True)
        if path is not None:  # after every case, so a run cut short still leaves what it measured
            path.write_text(json.dumps(results, indent=2) + "\n")

    return report


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = run(args)
    single, bare = results["single_plugin"]["median_s"], results["base_only"]["median_s"]
    official = results["chain3_official"]["median_s"]
    results["ratios"] = {
        "plugin_over_base": round(single / bare, 3),
        "cold_over_resident_switch": round(results["cold_start_s"] / results["switch_from_disk"]["median_s"], 2),
        "chain3_over_single": round(official / single, 3),
        "chain3_latents_over_official": round(results["chain3_latents"]["median_s"] / official, 3),
        "chain3_clip_current_over_official": round(results["chain3_clip_current"]["median_s"] / official, 3),
        "chain3_judged_over_official": round(results["chain3_judged"]["median_s"] / official, 3),
    }
    print(json.dumps(results["ratios"], indent=2))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
