"""Train a Task-Plugin (TPB + SCB) on a frozen base model, as the paper does (spec §4), with accelerate.

Loss: ε-MSE on DDPM noise of the clean latent, the SCB conditioned on the degraded latent's posterior mean and
the TPB on CLIP tokens of the degraded photo. One AdamW over both branches. Unlike the official script,
gradient accumulation wraps both branches together (`accelerator.accumulate(tpb, scb)`).
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import DataLoader, Dataset

from plugins.data.pairs import Pair, read_pairs
from plugins.data.photos import load_photo
from plugins.diffplugin.pipeline import (
    DEFAULT_BASE,
    DEFAULT_IMAGE_ENCODER,
    DiffPluginPipeline,
    DiffPluginPipelineOutput,
    predict_noise,
)
from plugins.diffplugin.plugin import TaskPlugin, check_compatible
from plugins.diffplugin.settings import PluginSettings
from plugins.errors import FileInTheWay, MissingFile
from plugins.progress import Progress, ProgressEvent

if TYPE_CHECKING:  # loaded by `train_plugin` only: importing them is slow
    from accelerate import Accelerator
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
    from transformers import CLIPImageProcessor

CHECKPOINT_PREFIX = "checkpoint-"
FINAL_PLUGIN_FOLDER = "plugin"
LOG_FILE = "train_log.jsonl"


class TrainConfig(BaseModel):
    """Everything `diffplugin train plugin` takes. Defaults follow the official training (spec §4)."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description="Paired CSV (header image,conditioning_image = clean, degraded).")
    task: str = Field(description="Task id of the new plugin, e.g. 'derain'.")
    output_dir: Path = Field(description="Checkpoints, validation images, log and the final plugin go here.")
    base: str = Field(DEFAULT_BASE, description="Base model: hub id or folder.")
    image_encoder: str = Field(DEFAULT_IMAGE_ENCODER, description="CLIP vision model, unless base holds one.")
    init_plugin: Path | None = Field(None, description="Start from this plugin folder instead of a new plugin.")
    resolution: int = Field(512, ge=8, description="Pairs are resized (bilinear) to resolution x resolution.")
    train_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    max_train_steps: int = Field(1000, ge=1, description="Optimizer steps.")
    learning_rate: float = Field(1e-5, gt=0)
    scale_lr: bool = Field(True, description="Multiply the LR by batch x accumulation x processes.")
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = Field(1.0, gt=0, description="Clipped per branch.")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = Field(
        None, description="None: as set by `accelerate config` (or the launcher), else 'no'.")
    seed: int = 42
    checkpointing_steps: int = Field(500, ge=1)
    checkpoints_total_limit: int | None = Field(None, ge=1)
    resume_from_checkpoint: str | None = Field(None, description="A checkpoint folder, or 'latest'.")
    validation_steps: int = Field(500, ge=1)
    num_validation_images: int = Field(2, ge=0)
    validation_inference_steps: int = Field(20, ge=1)
    dataloader_num_workers: int = Field(0, ge=0)


class TrainResult(BaseModel):
    plugin: str
    global_step: int
    last_loss: float
    checkpoints: list[str] = Field(description="Checkpoint folders on disk at the end (after pruning).")
    validation_losses: dict[int, float]


class PairedImageDataset(Dataset[dict[str, torch.Tensor]]):
    """Clean and degraded pixels in [-1, 1] at `resolution`², plus CLIP pixels of the degraded photo.

    CLIP pixels come from the pipeline's own `CLIPImageProcessor`, so training and inference see the same
    preprocessing (the official code resizes to 224² in training but centre-crops at inference).
    """

    def __init__(self, pairs: list[Pair], resolution: int, feature_extractor: CLIPImageProcessor) -> None:
        self.pairs = pairs
        self.resolution = resolution
        self.feature_extractor = feature_extractor

    def __len__(self) -> int:
        return len(self.pairs)

    def _pixels(self, image: PIL.Image.Image) -> torch.Tensor:
        image = image.resize((self.resolution, self.resolution), PIL.Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index]
        clean, degraded = load_photo(pair.clean), load_photo(pair.degraded)
        clip = self.feature_extractor(images=degraded, return_tensors="pt").pixel_values[0]
        return {"clean": self._pixels(clean), "degraded": self._pixels(degraded), "clip": clip}


def plugin_loss(
    pipe: DiffPluginPipeline,
    plugin: TaskPlugin,
    batch: dict[str, torch.Tensor],
    noise_scheduler: DDPMScheduler,
    generator: torch.Generator | None = None,
    timesteps: torch.Tensor | None = None,
) -> torch.Tensor:
    """ε-MSE of the plugin on a batch. Random timesteps unless given; `generator` (CPU) fixes the noise."""
    vae, unet = pipe.vae, pipe.unet
    dtype = vae.dtype
    with torch.no_grad():
        clean = batch["clean"].to(pipe.device, dtype)
        latents = vae.encode(clean).latent_dist.sample(generator) * vae.config["scaling_factor"]
        cond = pipe.encode_condition(batch["degraded"])
        tokens = pipe.image_encoder(pixel_values=batch["clip"].to(pipe.device, dtype)).last_hidden_state[:, 1:]
    noise = randn_tensor(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if timesteps is None:
        timesteps = torch.randint(0, noise_scheduler.config["num_train_timesteps"], (latents.shape[0],),
                                  generator=generator)
    timesteps = timesteps.to(latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)  # type: ignore[arg-type]  # any int tensor works
    prompt = plugin.tpb(tokens)
    pred = predict_noise(unet, plugin.scb, noisy, timesteps, prompt, cond)
    return F.mse_loss(pred.float(), noise.float())


@torch.no_grad()
def evaluate_loss(pipe: DiffPluginPipeline, plugin: TaskPlugin, batch: dict[str, torch.Tensor],
                  noise_scheduler: DDPMScheduler, seed: int = 0,
                  timesteps: tuple[int, ...] = (50, 250, 500, 750, 950)) -> float:
    """Mean ε-MSE over fixed timesteps and fixed noise: comparable across training steps."""
    generator = torch.Generator().manual_seed(seed)
    losses = [
        plugin_loss(pipe, plugin, batch, noise_scheduler, generator,
                    torch.full((batch["clean"].shape[0],), t, dtype=torch.long)).item()
        for t in timesteps
    ]
    return sum(losses) / len(losses)


def noise_generator(seed: int, process_index: int, micro_step: int) -> torch.Generator:
    """The generator for one micro-batch's noise and timesteps, derived from (seed, process, micro-batch index):
    every process draws different noise, and a resumed run draws exactly what an uninterrupted one would,
    with no generator state to checkpoint."""
    entropy = np.random.SeedSequence([seed, process_index, micro_step]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(entropy))


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))


def _resolve_resume(config: TrainConfig) -> Path | None:
    if config.resume_from_checkpoint is None:
        return None
    if config.resume_from_checkpoint == "latest":
        found = _checkpoints(config.output_dir)
        return found[-1] if found else None
    path = Path(config.resume_from_checkpoint)
    if not path.is_dir():
        raise MissingFile(f"resume_from_checkpoint: {path} is not a checkpoint folder.")
    return path


def _save_validation(pipe: DiffPluginPipeline, plugin: TaskPlugin, pairs: list[Pair], config: TrainConfig,
                     step: int) -> None:
    """Save [degraded | output | clean] strips for the first validation pairs."""
    plugin = copy.deepcopy(plugin)  # the pipeline casts it to the base's dtype; the trained weights stay fp32
    folder = config.output_dir / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    pipe.set_progress_bar_config(disable=True)  # type: ignore[no-untyped-call]  # diffusers leaves it unannotated
    for k, pair in enumerate(pairs[: config.num_validation_images]):
        degraded = load_photo(pair.degraded).resize((config.resolution,) * 2)
        clean = load_photo(pair.clean).resize((config.resolution,) * 2)
        result = pipe(degraded, plugin, num_inference_steps=config.validation_inference_steps,
                      generator=torch.Generator().manual_seed(config.seed), short_side=None)
        assert isinstance(result, DiffPluginPipelineOutput) and isinstance(result.images, list)  # the defaults
        output = result.images[0]
        strip = PIL.Image.new("RGB", (config.resolution * 3, config.resolution))
        for i, im in enumerate((degraded, output, clean)):
            strip.paste(im, (i * config.resolution, 0))
        strip.save(folder / f"step-{step:07d}_{k}.png")
    pipe.set_progress_bar_config(disable=False)  # type: ignore[no-untyped-call]  # diffusers leaves it unannotated


def train_plugin(config: TrainConfig, pipe: DiffPluginPipeline | None = None,
                 progress: Progress | None = None) -> TrainResult:
    """Train (or resume training) a Task-Plugin; returns where the final plugin was written. `progress` hears
    each optimiser step (kind 'train', with the loss) on the main process only, so one bar shows one run."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.schedulers.scheduling_ddpm import DDPMScheduler  # the top level types as a placeholder

    accelerator = Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        project_config=ProjectConfiguration(project_dir=str(config.output_dir)),
        # Shuffling seeded by (seed, epoch), so a resumed run sees the batches the uninterrupted one would.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)

    resume = _resolve_resume(config)
    if resume is None and config.output_dir.exists() and any(config.output_dir.iterdir()):
        raise FileInTheWay(
            f"{config.output_dir} already holds a training run; resume it (--resume latest) or choose a new "
            "output folder."
        )
    pairs = read_pairs(config.data)
    if pipe is None:
        from plugins.diffplugin.pull import load_base

        pipe = load_base(config.base, config.image_encoder)
    for frozen in (pipe.vae, pipe.unet, pipe.image_encoder):
        frozen.requires_grad_(False).eval()
    pipe.to(accelerator.device)
    if pipe.unet.dtype != weight_dtype:
        pipe.to(dtype=weight_dtype)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    if config.init_plugin:
        plugin = TaskPlugin.from_pretrained(config.init_plugin)
        check_compatible(plugin, pipe.unet, pipe.image_encoder)
        if plugin.task != config.task:  # a different task gets that task's defaults (start mode)
            plugin.settings = PluginSettings.for_task(config.task)
    else:
        plugin = TaskPlugin.for_base(pipe.unet, pipe.image_encoder, config.task)
    tpb, scb = plugin.tpb.train(), plugin.scb.train()

    lr = config.learning_rate
    if config.scale_lr:
        lr *= config.gradient_accumulation_steps * config.train_batch_size * accelerator.num_processes
    optimizer = torch.optim.AdamW(
        list(tpb.parameters()) + list(scb.parameters()), lr=lr, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay, eps=config.adam_epsilon,
    )
    dataset = PairedImageDataset(pairs, config.resolution, pipe.feature_extractor)
    loader = DataLoader(dataset, batch_size=config.train_batch_size, shuffle=True,
                        num_workers=config.dataloader_num_workers, drop_last=len(dataset) >= config.train_batch_size)
    lr_scheduler = get_scheduler("constant", optimizer)
    tpb, scb, optimizer, loader, lr_scheduler = accelerator.prepare(tpb, scb, optimizer, loader, lr_scheduler)
    plugin.tpb, plugin.scb = tpb, scb

    validation_batch = next(iter(DataLoader(dataset, batch_size=min(len(dataset), 4))))
    global_step = 0
    if resume is not None:
        accelerator.load_state(str(resume))
        global_step = int(resume.name.removeprefix(CHECKPOINT_PREFIX))
    updates_per_epoch = max(1, math.ceil(len(loader) / config.gradient_accumulation_steps))
    first_epoch = global_step // updates_per_epoch
    skip_batches = (global_step % updates_per_epoch) * config.gradient_accumulation_steps
    micro_step = global_step * config.gradient_accumulation_steps

    config.output_dir.mkdir(parents=True, exist_ok=True)
    log = (config.output_dir / LOG_FILE).open("a")
    report = progress if accelerator.is_main_process else None
    if report is not None:  # a resumed run starts its bar where the checkpoint left off
        report(ProgressEvent("train", global_step, config.max_train_steps, what=config.task))
    last_loss = float("nan")
    micro_losses: list[torch.Tensor] = []
    validation_losses: dict[int, float] = {}
    saved: list[str] = []

    def unwrapped() -> TaskPlugin:
        return TaskPlugin(accelerator.unwrap_model(tpb), accelerator.unwrap_model(scb), plugin.settings)

    epoch = first_epoch
    while global_step < config.max_train_steps:
        loader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
        skip_batches = 0
        for batch in batches:
            with accelerator.accumulate(tpb, scb):
                generator = noise_generator(config.seed, accelerator.process_index, micro_step)
                loss = plugin_loss(pipe, plugin, batch, noise_scheduler, generator)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    # Unscale once (a second unscale_ raises under fp16), then clip each branch on its own.
                    accelerator.unscale_gradients()
                    torch.nn.utils.clip_grad_norm_(tpb.parameters(), config.max_grad_norm)
                    torch.nn.utils.clip_grad_norm_(scb.parameters(), config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            micro_step += 1
            micro_losses.append(loss.detach())
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            last_loss = accelerator.gather(torch.stack(micro_losses).mean()).mean().item()
            micro_losses.clear()
            if report is not None:
                report(ProgressEvent("train", global_step, config.max_train_steps, what=config.task,
                                     loss=last_loss))
            record = {"step": global_step, "epoch": epoch, "loss": last_loss, "lr": lr_scheduler.get_last_lr()[0]}
            if accelerator.is_main_process and global_step % config.validation_steps == 0:
                tpb.eval()
                scb.eval()
                with accelerator.autocast():
                    record["validation_loss"] = validation_losses[global_step] = evaluate_loss(
                        pipe, unwrapped(), validation_batch, noise_scheduler, seed=config.seed)
                if config.num_validation_images:
                    _save_validation(pipe, unwrapped(), pairs, config, global_step)
                tpb.train()
                scb.train()
            if global_step % config.checkpointing_steps == 0 or global_step == config.max_train_steps:
                accelerator.wait_for_everyone()
                _save_checkpoint(accelerator, unwrapped(), config, global_step)
                saved = [str(p) for p in _checkpoints(config.output_dir)]
            if accelerator.is_main_process:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if global_step >= config.max_train_steps:
                break
        epoch += 1
    log.close()

    final = config.output_dir / FINAL_PLUGIN_FOLDER
    if accelerator.is_main_process:
        unwrapped().save_pretrained(final)
    accelerator.end_training()
    return TrainResult(plugin=str(final), global_step=global_step, last_loss=last_loss, checkpoints=saved,
                       validation_losses=validation_losses)


def _save_checkpoint(accelerator: Accelerator, plugin: TaskPlugin, config: TrainConfig, step: int) -> Path:
    """Full training state (for resume) plus a ready-to-use plugin folder; prune old checkpoints.

    Called on every process: accelerate writes the weights once and each process's RNG state."""
    path = config.output_dir / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        plugin.save_pretrained(path / FINAL_PLUGIN_FOLDER)
        if config.checkpoints_total_limit is not None:
            for old in _checkpoints(config.output_dir)[: -config.checkpoints_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path
