"""Per-denoising-step cost of a Diff-Plugin Task-Plugin on top of a Stable Diffusion 1.x UNet.

Times, in one run and on the same machine:

* the bare SD-1.x UNet (one forward pass = one denoising step; Diff-Plugin uses no classifier-free guidance);
* one step as the pipeline and the training run it (``predict_noise``): the SCB, then the UNet with
  ``down_block_additional_residuals=residuals + padding`` and ``mid_block_additional_residual=zero``;
* the SCB alone (per step) and the TPB alone (once per image, amortised over ``--steps``).

All modules are full size with random weights (nothing is downloaded): the UNet uses SD-1.4's config, the TPB
and SCB their default (official) configs, and the SCB's zero convs get random weights so that every layer does
real work. Both UNet variants get the same 256-token task prompt, so the difference is the plugin alone. The
scheduler, VAE and CLIP encoder are not timed (they are the same with or without a plugin, bar the one CLIP
pass per image that the TPB needs).

Run from the repository root::

    PYTHONPATH=. python benchmarks/plugin_overhead.py                 # CPU: fp32, 256x256, 5 repeats
    PYTHONPATH=. python benchmarks/plugin_overhead.py --device cuda   # GPU: fp16, 512x512, 20 repeats
    PYTHONPATH=. python benchmarks/plugin_overhead.py --json          # one JSON object instead of the table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import diffusers
import torch
from diffusers import UNet2DConditionModel
from torch import nn

from plugins.diffplugin.pipeline import predict_noise
from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.tiny import SD14_UNET_CONFIG
from plugins.diffplugin.tpb import TPBNet

#: Patch tokens of CLIP ViT-L/14 at 224 px (16x16 patches, CLS dropped) and their width.
CLIP_TOKENS = 256
CLIP_WIDTH = 1024
#: A mid-schedule timestep; the cost of a step does not depend on it.
TIMESTEP = 500

#: Slowest / fastest UNet repeat above which the timings are flagged as noisy.
NOISY_SPREAD = 1.25

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cuda if available, else cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="fp16 on cuda, fp32 on cpu")
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (512 on cuda, 256 on cpu)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image (amortises the TPB)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (20 on cuda, 5 on cpu)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (5 on cuda, 1 on cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = args.device.type == "cuda"
    args.dtype = args.dtype or ("fp16" if on_cuda else "fp32")
    args.size = args.size if args.size is not None else (512 if on_cuda else 256)
    args.repeats = args.repeats if args.repeats is not None else (20 if on_cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    if args.size < 8 or args.size % 8:
        parser.error(f"--size must be a positive multiple of 8 (the VAE factor), got {args.size}")
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    return args


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU model (from /proc/cpuinfo where there is one)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_modules(device: torch.device, dtype: torch.dtype, seed: int) -> tuple[UNet2DConditionModel, TPBNet, SCBNet]:
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD14_UNET_CONFIG)
    tpb = TPBNet()
    scb = SCBNet()
    for conv in scb.controlnet_down_blocks:  # zero-initialised by design; random here so the work is real
        conv.reset_parameters()
    modules = (unet, tpb, scb)
    level = diffusers.logging.get_verbosity()
    diffusers.logging.set_verbosity_error()  # silence "cast with from_pretrained(torch_dtype=...)": nothing is loaded
    try:
        for module in modules:
            module.to(device=device, dtype=dtype).eval().requires_grad_(False)
    finally:
        diffusers.logging.set_verbosity(level)
    return modules


def _loadavg() -> float | None:
    """The 1-minute load average (None where the OS has none): other work on a CPU machine skews the timings."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                     warmup: int) -> dict[str, list[float]]:
    """Run every function `warmup` times, then `repeats` rounds of one call each (interleaved so that drift in
    clock speed or load hits all of them alike); returns the per-call times in milliseconds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = args.device, DTYPES[args.dtype]
    load_before = _loadavg()
    started = time.perf_counter()
    unet, tpb, scb = build_modules(device, dtype, args.seed)
    build_s = time.perf_counter() - started

    latent = args.size // 8
    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    sample = torch.randn(1, 4, latent, latent, generator=gen).to(device=device, dtype=dtype)
    cond = torch.randn(1, 4, latent, latent, generator=gen).to(device=device, dtype=dtype)
    clip_tokens = torch.randn(1, CLIP_TOKENS, CLIP_WIDTH, generator=gen).to(device=device, dtype=dtype)
    t = torch.tensor(TIMESTEP, device=device)
    prompt = tpb(clip_tokens)

    def bare() -> torch.Tensor:
        return unet(sample, t, encoder_hidden_states=prompt).sample

    def scb_only() -> tuple[torch.Tensor, ...]:
        return scb(cond, t, prompt).down_block_res_samples

    def with_plugin() -> torch.Tensor:  # the very call the pipeline and the training make
        return predict_noise(unet, scb, sample, t, prompt, cond)

    def tpb_only() -> torch.Tensor:
        return tpb(clip_tokens)

    times = time_interleaved({"unet": bare, "unet_scb": with_plugin, "scb": scb_only, "tpb": tpb_only},
                             device, args.repeats, args.warmup)
    med = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    spread = max(max(times[name]) / min(times[name]) for name in ("unet", "unet_scb"))

    p_unet, p_tpb, p_scb = num_params(unet), num_params(tpb), num_params(scb)
    image_bare = args.steps * med["unet"]
    image_plugin = args.steps * med["unet_scb"] + med["tpb"]
    return {
        "device": str(device),
        "device_name": device_name(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "size": args.size,
        "latent": latent,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "params": {
            "unet": p_unet,
            "tpb": p_tpb,
            "scb": p_scb,
            "plugin": p_tpb + p_scb,
            "plugin_pct_of_unet": 100.0 * (p_tpb + p_scb) / p_unet,
        },
        "ms": {
            "unet_per_step": med["unet"],
            "unet_scb_per_step": med["unet_scb"],
            "scb_per_step": med["scb"],
            "tpb_per_image": med["tpb"],
            "tpb_amortised_per_step": med["tpb"] / args.steps,
            "image_bare": image_bare,
            "image_with_plugin": image_plugin,
        },
        "overhead": {
            "per_step_ratio": med["unet_scb"] / med["unet"],
            "per_image_ratio": image_plugin / image_bare,
            "per_image_pct": 100.0 * (image_plugin / image_bare - 1.0),
            # Cross-check from separately timed parts: less sensitive to a noisy bare-UNet median on a busy CPU.
            "scb_over_unet_pct": 100.0 * med["scb"] / med["unet"],
        },
        "min_ms": {
            "unet_per_step": best["unet"],
            "unet_scb_per_step": best["unet_scb"],
            "scb_per_step": best["scb"],
            "tpb_per_image": best["tpb"],
        },
        "raw_ms": times,
        "spread": spread,
        "loadavg_1min": {"before": load_before, "after": _loadavg()},
        "build_s": build_s,
        "total_s": time.perf_counter() - started,
    }


def format_table(r: dict[str, Any]) -> str:
    p, ms, best, o = r["params"], r["ms"], r["min_ms"], r["overhead"]
    rows = [
        (f"Diff-Plugin overhead on an SD-1.x UNet (random weights), {r['size']}x{r['size']} px "
         f"(latent {r['latent']}x{r['latent']}), {r['dtype']}, batch 1"),
        (f"device: {r['device']} ({r['device_name']}), {r['threads']} torch threads of {r['cpu_count']} CPUs; "
         f"torch {r['torch']}, diffusers {r['diffusers']}, Python {r['python']}"),
        f"{r['repeats']} interleaved repeats after {r['warmup']} warm-up; overheads use the medians",
        "",
        f"{'parameters':<40}{'count':>16}",
        f"{'  UNet':<40}{p['unet']:>16,}",
        f"{'  TPB':<40}{p['tpb']:>16,}",
        f"{'  SCB':<40}{p['scb']:>16,}",
        f"{'  plugin (TPB + SCB)':<40}{p['plugin']:>16,}",
        f"{'  plugin / UNet':<40}{p['plugin_pct_of_unet']:>15.2f}%",
        "",
        f"{'time':<40}{'median ms':>16}{'min ms':>12}",
        f"{'  bare UNet, per step':<40}{ms['unet_per_step']:>16.2f}{best['unet_per_step']:>12.2f}",
        f"{'  UNet + SCB, per step':<40}{ms['unet_scb_per_step']:>16.2f}{best['unet_scb_per_step']:>12.2f}",
        f"{'  SCB alone, per step':<40}{ms['scb_per_step']:>16.2f}{best['scb_per_step']:>12.2f}",
        f"{'  TPB, per image':<40}{ms['tpb_per_image']:>16.2f}{best['tpb_per_image']:>12.2f}",
        f"{'  image, ' + str(r['steps']) + ' steps, bare UNet':<40}{ms['image_bare']:>16.1f}",
        f"{'  image, ' + str(r['steps']) + ' steps, with plugin (+TPB)':<40}{ms['image_with_plugin']:>16.1f}",
        "",
        (f"overhead: x{o['per_step_ratio']:.3f} per step, x{o['per_image_ratio']:.3f} per image "
         f"({o['per_image_pct']:+.1f}%); SCB alone / bare UNet: {o['scb_over_unet_pct']:.1f}%"),
        f"(building the modules took {r['build_s']:.1f} s; whole run {r['total_s']:.1f} s)",
    ]
    load = r["loadavg_1min"]
    if load["before"] is not None:
        rows.append(f"1-min load average: {load['before']:.2f} before, {load['after']:.2f} after")
    if r["spread"] > NOISY_SPREAD:
        rows.append(f"WARNING: the slowest UNet repeat took x{r['spread']:.2f} the fastest: other work "
                    "was probably running; rerun on an idle machine or with more --repeats.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded; make sure of it
    args = parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
