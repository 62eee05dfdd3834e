"""Per-denoising-step cost of a Diff-Plugin Task-Plugin on top of a Stable Diffusion 1.x UNet.

Times, in one run and on the same machine:

* the bare SD-1.x UNet (one forward pass = one denoising step; Diff-Plugin uses no classifier-free guidance);
* the per-step path (``predict_noise`` as training runs it, and the pipeline with ``scb_batch=1`` or
  ``compile_denoiser``): the SCB, then the UNet with ``down_block_additional_residuals=residuals + padding`` and
  ``mid_block_additional_residual=zero``;
* the batched path (the pipeline's default): ``scb_residuals`` gives the SCB's residuals for every timestep of
  the ``--steps`` UniPC schedule in as few calls as its memory budget allows (the SCB never sees the noisy
  latent), then each step is the UNet with those residuals (``predict_noise(..., residuals=...)``);
* the SCB alone (per step) and the TPB alone (once per image).

Per image, the plugin costs ``steps x (UNet + SCB) + TPB`` on the per-step path and ``steps x (UNet with
residuals) + batched SCB + TPB`` on the batched path, against ``steps x UNet`` bare. With ``--images`` (the
default on CUDA, where kernel launches overlap and per-call timings mislead) the three per-image denoising loops
are also timed whole.

All modules are full size with random weights (nothing is downloaded): the UNet uses SD-1.4's config, the TPB
and SCB their default (official) configs, and the SCB's zero convs get random weights so that every layer does
real work. Both UNet variants get the same 256-token task prompt, so the difference is the plugin alone. The
scheduler, VAE and CLIP encoder are not timed (they are the same with or without a plugin, bar the one CLIP
pass per image that the TPB needs).

Run from the repository root::

    PYTHONPATH=. python benchmarks/plugin_overhead.py                 # CPU: fp32, 256x256, 5 repeats
    PYTHONPATH=. python benchmarks/plugin_overhead.py --device cuda   # GPU: fp16, 512x512, 20 repeats, --images
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
from diffusers import UNet2DConditionModel, UniPCMultistepScheduler
from torch import nn

from plugins.diffplugin.pipeline import predict_noise, scb_batch_size, scb_residuals
from plugins.diffplugin.scb import SCBNet
from plugins.diffplugin.tiny import SD1_SCHEDULE, SD14_UNET_CONFIG
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
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=None,
                        help="also time whole per-image denoising loops (default: on cuda only)")
    parser.add_argument("--scb-batch", type=int, default=None,
                        help="timesteps per batched SCB call (default: as the pipeline picks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_cuda = args.device.type == "cuda"
    args.dtype = args.dtype or ("fp16" if on_cuda else "fp32")
    args.size = args.size if args.size is not None else (512 if on_cuda else 256)
    args.repeats = args.repeats if args.repeats is not None else (20 if on_cuda else 5)
    args.warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    args.images = on_cuda if args.images is None else args.images
    if args.size < 8 or args.size % 8:
        parser.error(f"--size must be a positive multiple of 8 (the VAE factor), got {args.size}")
    if args.steps < 1 or args.repeats < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be >= 1 and --warmup >= 0")
    if (args.threads is not None and args.threads < 1) or (args.scb_batch is not None and args.scb_batch < 1):
        parser.error("--threads and --scb-batch must be >= 1")
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


def _peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Memory `fn` allocates at its peak beyond what was held before it (CUDA only; None elsewhere)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    held = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - held


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, Any]:
    device, dtype = args.device, DTYPES[args.dtype]
    if args.threads is not None:
        torch.set_num_threads(args.threads)
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
    scheduler = UniPCMultistepScheduler(**SD1_SCHEDULE, final_sigmas_type="sigma_min")
    scheduler.set_timesteps(args.steps, device=device)
    timesteps = scheduler.timesteps
    per_call = args.scb_batch or scb_batch_size(cond.shape, scb.config.block_out_channels[0], dtype, device)
    residuals = next(scb_residuals(scb, cond, t[None], prompt))

    def bare() -> torch.Tensor:
        return unet(sample, t, encoder_hidden_states=prompt).sample

    def scb_only() -> tuple[torch.Tensor, ...]:
        return scb(cond, t, prompt).down_block_res_samples

    def with_plugin() -> torch.Tensor:  # the per-step path: the very call training makes
        return predict_noise(unet, scb, sample, t, prompt, cond)

    def with_residuals() -> torch.Tensor:  # one step of the batched path
        return predict_noise(unet, scb, sample, t, prompt, cond, residuals=residuals)

    def scb_schedule() -> list[tuple[torch.Tensor, ...]]:  # every step's residuals, as the pipeline batches them
        return list(scb_residuals(scb, cond, timesteps, prompt, per_call=per_call))

    def tpb_only() -> torch.Tensor:
        return tpb(clip_tokens)

    # Whole per-image denoising loops (no scheduler update: it costs the same in all three).
    def image_bare() -> None:
        for step in timesteps:
            unet(sample, step, encoder_hidden_states=prompt)

    def image_per_step() -> None:
        tpb(clip_tokens)
        for step in timesteps:
            predict_noise(unet, scb, sample, step, prompt, cond)

    def image_batched() -> None:
        tpb(clip_tokens)
        for step, step_residuals in zip(timesteps, scb_residuals(scb, cond, timesteps, prompt, per_call=per_call),
                                        strict=True):
            predict_noise(unet, scb, sample, step, prompt, cond, residuals=step_residuals)

    fns: dict[str, Callable[[], object]] = {"unet": bare, "unet_scb": with_plugin, "unet_res": with_residuals,
                                            "scb": scb_only, "scb_schedule": scb_schedule, "tpb": tpb_only}
    if args.images:
        fns |= {"image_bare": image_bare, "image_per_step": image_per_step, "image_batched": image_batched}
    times = time_interleaved(fns, device, args.repeats, args.warmup)
    med = {name: statistics.median(values) for name, values in times.items()}
    best = {name: min(values) for name, values in times.items()}
    spread = max(max(times[name]) / min(times[name]) for name in ("unet", "unet_scb", "unet_res"))

    p_unet, p_tpb, p_scb = num_params(unet), num_params(tpb), num_params(scb)
    image_bare_ms = args.steps * med["unet"]
    image_per_step_ms = args.steps * med["unet_scb"] + med["tpb"]
    image_batched_ms = args.steps * med["unet_res"] + med["scb_schedule"] + med["tpb"]
    result: dict[str, Any] = {
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
        "scb_timesteps_per_call": per_call,
        "scb_calls_per_image": -(-args.steps // per_call),
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
            "unet_with_residuals_per_step": med["unet_res"],
            "scb_per_step": med["scb"],
            "scb_batched_per_image": med["scb_schedule"],
            "tpb_per_image": med["tpb"],
            "tpb_amortised_per_step": med["tpb"] / args.steps,
            "image_bare": image_bare_ms,
            "image_per_step": image_per_step_ms,
            "image_batched": image_batched_ms,
            # Kept under its former name: the per-step path, the pipeline's only path before batching.
            "image_with_plugin": image_per_step_ms,
        },
        "overhead": {
            "per_step_ratio": med["unet_scb"] / med["unet"],
            "per_image_ratio": image_per_step_ms / image_bare_ms,
            "per_image_pct": 100.0 * (image_per_step_ms / image_bare_ms - 1.0),
            "batched_per_image_ratio": image_batched_ms / image_bare_ms,
            "batched_per_image_pct": 100.0 * (image_batched_ms / image_bare_ms - 1.0),
            "batched_over_per_step": image_batched_ms / image_per_step_ms,
            # Cross-checks from separately timed parts: less sensitive to a noisy bare-UNet median on a busy CPU.
            "scb_over_unet_pct": 100.0 * med["scb"] / med["unet"],
            "scb_batched_over_unet_pct": 100.0 * med["scb_schedule"] / image_bare_ms,
            "residual_path_over_unet_pct": 100.0 * (med["unet_res"] / med["unet"] - 1.0),
        },
        "min_ms": {name: best[name] for name in ("unet", "unet_scb", "unet_res", "scb", "scb_schedule", "tpb")},
        "scb_peak_extra_bytes": {
            "per_step_call": _peak_extra_bytes(scb_only, device),
            "batched_call": _peak_extra_bytes(
                lambda: scb(cond, timesteps[:per_call], prompt).down_block_res_samples, device),
        },
        "raw_ms": times,
        "spread": spread,
        "loadavg_1min": {"before": load_before, "after": _loadavg()},
        "build_s": build_s,
    }
    if args.images:
        result["whole_image_ms"] = {"bare": med["image_bare"], "per_step": med["image_per_step"],
                                    "batched": med["image_batched"]}
        result["whole_image_ratio"] = {"per_step": med["image_per_step"] / med["image_bare"],
                                       "batched": med["image_batched"] / med["image_bare"]}
    result["total_s"] = time.perf_counter() - started
    return result


def format_table(r: dict[str, Any]) -> str:
    p, ms, best, o = r["params"], r["ms"], r["min_ms"], r["overhead"]
    rows = [
        (f"Diff-Plugin overhead on an SD-1.x UNet (random weights), {r['size']}x{r['size']} px "
         f"(latent {r['latent']}x{r['latent']}), {r['dtype']}, batch 1"),
        (f"device: {r['device']} ({r['device_name']}), {r['threads']} torch threads of {r['cpu_count']} CPUs; "
         f"torch {r['torch']}, diffusers {r['diffusers']}, Python {r['python']}"),
        f"{r['repeats']} interleaved repeats after {r['warmup']} warm-up; overheads use the medians",
        "",
        f"{'parameters':<48}{'count':>14}",
        f"{'  UNet':<48}{p['unet']:>14,}",
        f"{'  TPB':<48}{p['tpb']:>14,}",
        f"{'  SCB':<48}{p['scb']:>14,}",
        f"{'  plugin (TPB + SCB)':<48}{p['plugin']:>14,}",
        f"{'  plugin / UNet':<48}{p['plugin_pct_of_unet']:>13.2f}%",
        "",
        f"{'time':<48}{'median ms':>14}{'min ms':>12}",
        f"{'  bare UNet, per step':<48}{ms['unet_per_step']:>14.2f}{best['unet']:>12.2f}",
        f"{'  UNet + SCB, per step (per-step path)':<48}{ms['unet_scb_per_step']:>14.2f}{best['unet_scb']:>12.2f}",
        (f"{'  UNet with given residuals, per step':<48}{ms['unet_with_residuals_per_step']:>14.2f}"
         f"{best['unet_res']:>12.2f}"),
        f"{'  SCB alone, per step':<48}{ms['scb_per_step']:>14.2f}{best['scb']:>12.2f}",
        (f"{'  SCB batched, all ' + str(r['steps']) + ' timesteps (' + str(r['scb_calls_per_image']) + ' calls)':<48}"
         f"{ms['scb_batched_per_image']:>14.2f}{best['scb_schedule']:>12.2f}"),
        f"{'  TPB, per image':<48}{ms['tpb_per_image']:>14.2f}{best['tpb']:>12.2f}",
        f"{'  image, ' + str(r['steps']) + ' steps, bare UNet':<48}{ms['image_bare']:>14.1f}",
        f"{'  image, per-step path (+TPB)':<48}{ms['image_per_step']:>14.1f}",
        f"{'  image, batched path (+TPB)':<48}{ms['image_batched']:>14.1f}",
        "",
        (f"per image, against the bare UNet: per-step path x{o['per_image_ratio']:.3f} ({o['per_image_pct']:+.1f}%), "
         f"batched path x{o['batched_per_image_ratio']:.3f} ({o['batched_per_image_pct']:+.1f}%); "
         f"batched / per-step x{o['batched_over_per_step']:.3f}"),
        (f"parts: SCB alone / bare UNet {o['scb_over_unet_pct']:.1f}% per step; batched SCB "
         f"{o['scb_batched_over_unet_pct']:.1f}% of a bare image; UNet with residuals / bare UNet "
         f"{o['residual_path_over_unet_pct']:+.1f}%"),
    ]
    if "whole_image_ms" in r:
        w, wr = r["whole_image_ms"], r["whole_image_ratio"]
        rows.append(f"whole per-image loops timed: bare {w['bare']:.1f} ms, per-step {w['per_step']:.1f} ms "
                    f"(x{wr['per_step']:.3f}), batched {w['batched']:.1f} ms (x{wr['batched']:.3f})")
    peak = r["scb_peak_extra_bytes"]
    if peak["per_step_call"] is not None:
        rows.append(f"SCB peak memory: {peak['per_step_call'] / 2**20:.0f} MiB per-step call, "
                    f"{peak['batched_call'] / 2**20:.0f} MiB batched call ({r['scb_timesteps_per_call']} timesteps)")
    rows.append(f"(building the modules took {r['build_s']:.1f} s; whole run {r['total_s']:.1f} s)")
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
