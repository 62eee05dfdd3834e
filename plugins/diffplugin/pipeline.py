"""DiffPluginPipeline: a frozen Stable Diffusion 1.x that restores photos through Task-Plugins (spec §6)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

# From their defining modules: diffusers' top level shows type checkers placeholder classes.
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput
from diffusers.utils.outputs import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPImageProcessor, CLIPVisionModel

from plugins.diffplugin.hardware import default_dtype, pick_device
from plugins.diffplugin.plugin import TaskPlugin, check_compatible
from plugins.diffplugin.scb import SCBNet
from plugins.errors import BadInput

DEFAULT_BASE = "CompVis/stable-diffusion-v1-4"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-large-patch14"

#: Activation memory one SCB call holds at its peak, per timestep, in elements of one full-resolution feature map
#: (h x w x width): measured 28-35 on CPU (fp32, SD-1.x SCB, latents 32 and 64), about 160 MiB at 512 px in fp32,
#: as much as the UNet's own peak there.
SCB_ACTIVATIONS_PER_ELEMENT = 32
#: Most activation memory one batched SCB call may take on CUDA, where batching saves kernel launches: 6 timesteps
#: per call at 512 px in fp16, one at 1024 px, where a single call already fills the GPU.
SCB_BATCH_BYTES = 512 * 2**20
#: The same on other devices. A CPU is bound by arithmetic, which batching does not reduce: it only pays at small
#: latents (2x at 64 px), and at 256 px 12 timesteps per call ran 20% slower than 1 to 4 (docs/benchmarks.md). 3
#: timesteps per call at 256 px in fp32, 1 (the per-step path) at 512 px.
SCB_BATCH_BYTES_CPU = 128 * 2**20

ResizeMode = Literal["min", "exact"]
ChainClip = Literal["original", "current"]
#: diffusers' `callback_on_step_end`: called after every denoising step with the pipeline, the step index in this
#: plugin's loop, the timestep and the tensors named in `callback_on_step_end_tensor_inputs`; what it returns
#: under those names replaces them for the next step.
StepEndCallback = Callable[["DiffPluginPipeline", int, torch.Tensor, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
#: Restored photos by `output_type`: PIL images ("pil"), a numpy array ("np") or a tensor ("pt").
PipelineImages = list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class DiffPluginPipelineOutput(BaseOutput):
    """`images`: the restored photo(s), as PIL images, a numpy array or a tensor by `output_type`."""

    images: PipelineImages


class DenoisingScheduler(Protocol):
    """What the denoising loop uses of a diffusers scheduler (their SchedulerMixin base declares none of it)."""

    timesteps: torch.Tensor
    init_noise_sigma: float
    config: dict[str, Any]

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None: ...

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                  ) -> torch.Tensor: ...

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor) -> SchedulerOutput: ...


class DiffPluginPipeline(DiffusionPipeline):
    r"""Low-level photo restoration with one frozen Stable Diffusion 1.x and one or more Task-Plugins.

    Each plugin's TPB turns CLIP patch tokens of the *original* photo into the prompt for every cross-attention;
    its SCB turns the VAE latent of the photo being restored into residuals for the UNet's full-resolution skips.
    No text and no classifier-free guidance are used. Plugins in a chain run one after another, each on the
    previous one's output.

    Args:
        vae ([`AutoencoderKL`]), unet ([`UNet2DConditionModel`]): the frozen SD-1.x parts.
        scheduler ([`SchedulerMixin`]): UniPC (the official choice) unless you pass another.
        image_encoder ([`CLIPVisionModel`]) and feature_extractor ([`CLIPImageProcessor`]): CLIP ViT-L/14.

    Example:
        ```py
        >>> pipe = DiffPluginPipeline.from_base("CompVis/stable-diffusion-v1-4", "openai/clip-vit-large-patch14")
        >>> derain = TaskPlugin.from_pretrained("plugins/derain")
        >>> out = pipe(photo, plugins=derain, generator=torch.Generator().manual_seed(42)).images[0]
        ```
    """

    model_cpu_offload_seq = "image_encoder->unet->vae"  # type: ignore[assignment]  # diffusers types it as None
    #: What `callback_on_step_end` may read and replace. The prompt and the SCB condition are left out: a run's
    #: SCB residuals are computed from them ahead of the loop (`scb_residuals`), so changing them mid-loop would
    #: reach the UNet but not the SCB.
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]
    # What `register_modules` sets (diffusers' pipeline would otherwise type every component as Any)
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: DenoisingScheduler
    image_encoder: CLIPVisionModel
    feature_extractor: CLIPImageProcessor

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        image_encoder: CLIPVisionModel,
        feature_extractor: CLIPImageProcessor,
    ) -> None:
        super().__init__()
        self.register_modules(  # type: ignore[no-untyped-call]  # diffusers leaves it unannotated
            vae=vae, unet=unet, scheduler=scheduler, image_encoder=image_encoder, feature_extractor=feature_extractor
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config["block_out_channels"]) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.denoiser: Callable[..., torch.Tensor] = predict_noise
        #: Timesteps per SCB call: `None` batches a run's residuals within a memory budget (`scb_batch_size`); 1
        #: runs the SCB inside every denoiser call (the per-step path, which `compile_denoiser` fuses into one graph).
        self.scb_batch: int | None = None
        # diffusers' loop state, read through the properties below (a step-end callback sets `_interrupt`)
        self._interrupt = False
        self._num_timesteps = 0
        self._plugin_index = 0

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` in `callback_on_step_end` to stop after this step: no later step or plugin
        runs, and the call returns what the latents hold now, decoded."""
        return self._interrupt

    @property
    def num_timesteps(self) -> int:
        """Denoising steps of the plugin running now."""
        return self._num_timesteps

    @property
    def plugin_index(self) -> int:
        """Position in `plugins` of the plugin running now."""
        return self._plugin_index

    def compile_denoiser(self) -> None:
        """Run every denoiser call (SCB + UNet) as one `torch.compile`d CUDA graph: ~3x faster per photo on an
        H200 (docs/benchmarks.md). The first call per plugin and photo size compiles (about a minute); later
        calls replay. CUDA only."""
        if self.device.type != "cuda":
            raise BadInput(f"compiling the denoiser needs a CUDA GPU; this pipeline is on {self.device.type}.")
        # One graph for both: separate graphs would let the SCB's next replay overwrite residuals the UNet's graph
        # still reads. The output is cloned because UniPC keeps past outputs across steps.
        graphed = torch.compile(predict_noise, mode="reduce-overhead")
        # Inside the graph the SCB's launches cost nothing; the eager batched SCB is measured against this in
        # benchmarks/gpu_compile.py.
        self.scb_batch = 1

        def denoiser(*args: Any, **kwargs: Any) -> torch.Tensor:
            torch.compiler.cudagraph_mark_step_begin()
            return graphed(*args, **kwargs).clone()

        self.denoiser = denoiser

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_base(
        cls,
        base: str | Path = DEFAULT_BASE,
        image_encoder: str | Path | None = DEFAULT_IMAGE_ENCODER,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> DiffPluginPipeline:
        """Load the base model from a hub id or a local folder, on the best device unless told.

        `base` is either a folder written by [`save_pretrained`] (it holds the image encoder, and
        `image_encoder` is ignored) or any diffusers-format SD-1.x model (hub id or folder), combined with the
        CLIP vision model `image_encoder`. The scheduler is always UniPC, configured from the base's schedule.
        """
        device = pick_device(device)
        dtype = dtype or default_dtype(device)
        if _is_complete_pipeline_folder(base):
            pipe = cls.from_pretrained(base, dtype=dtype)
        else:
            if image_encoder is None:
                raise BadInput(f"{base} holds no image encoder: pass the CLIP vision model as image_encoder.")
            pipe = cls(
                vae=AutoencoderKL.from_pretrained(base, subfolder="vae", dtype=dtype),
                unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet", dtype=dtype),
                scheduler=UniPCMultistepScheduler.from_pretrained(base, subfolder="scheduler"),
                image_encoder=CLIPVisionModel.from_pretrained(image_encoder, dtype=dtype),
                feature_extractor=CLIPImageProcessor.from_pretrained(image_encoder),
            )
        # UniPC, as the official code; its last step lands on the smallest training sigma (t=0) as diffusers
        # 0.17 did, where current diffusers would default to sigma 0.
        pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config, final_sigmas_type="sigma_min")
        return pipe.to(device)

    # ------------------------------------------------------------------ building blocks
    def target_size(self, width: int, height: int, short_side: int | None, resize_mode: ResizeMode) -> tuple[int, int]:
        """(width, height) to process at: short side scaled to `short_side` ('exact'), or up to it only ('min'),
        then floored to multiples of the VAE factor."""
        scale = 1.0
        if short_side is not None:
            scale = short_side / min(width, height)
            if resize_mode == "min":
                scale = max(scale, 1.0)
        f = self.vae_scale_factor
        w, h = round(width * scale) // f * f, round(height * scale) // f * f
        if w < f or h < f:
            raise BadInput(f"image {width}x{height} is too small to process (needs at least {f} px a side).")
        return w, h

    def encode_clip_tokens(self, image: PIL.Image.Image) -> torch.Tensor:
        """CLIP last-layer patch tokens of `image` (CLS dropped): [1, N, hidden]."""
        pixels = self.feature_extractor(images=image, return_tensors="pt").pixel_values
        pixels = pixels.to(device=self._execution_device, dtype=self.image_encoder.dtype)
        tokens: torch.Tensor = self.image_encoder(pixel_values=pixels).last_hidden_state
        return tokens[:, 1:]

    def encode_condition(self, image: torch.Tensor) -> torch.Tensor:
        """Scaled VAE posterior mean of `image` ([-1, 1], [B, 3, H, W]): the SCB's condition."""
        image = image.to(device=self._execution_device, dtype=self.vae.dtype)
        mean: torch.Tensor = self.vae.encode(image).latent_dist.mean
        scale: float = self.vae.config["scaling_factor"]
        return mean * scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(self.vae.dtype) / self.vae.config["scaling_factor"]
        decoded: torch.Tensor = self.vae.decode(latents).sample
        return decoded.clamp(-1, 1)

    def restore_latents(
        self,
        plugin: TaskPlugin,
        image: torch.Tensor,
        clip_tokens: torch.Tensor,
        num_inference_steps: int,
        generator: torch.Generator | None = None,
        conditioning_scale: float = 1.0,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run one plugin's denoising loop on `image` ([-1, 1]); returns the final latents, or the latents of the
        step after which `interrupt` was set.

        `condition` replaces the VAE latent of `image` as the SCB's input (a chain passing latents on)."""
        device, dtype = self._execution_device, self.unet.dtype
        plugin.to(device=device, dtype=dtype)
        prompt = plugin.tpb(clip_tokens.to(dtype))
        if condition is None:
            condition = self.encode_condition(image)
        cond = condition.to(dtype)  # the VAE may run in another dtype (e.g. upcast to fp32)
        noise: torch.Tensor = randn_tensor(cond.shape, generator=generator, device=device, dtype=dtype)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        pure_noise = plugin.settings.start == "noise"
        latents = noise * self.scheduler.init_noise_sigma
        batched = None if self.scb_batch == 1 else \
            scb_residuals(plugin.scb, cond, timesteps, prompt, conditioning_scale, self.scb_batch)

        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                break
            if not pure_noise and t >= plugin.settings.time_threshold:
                latents = self.scheduler.add_noise(cond, noise, t.reshape(1))
            noise_pred = self.denoiser(self.unet, plugin.scb, self.scheduler.scale_model_input(latents, t), t,
                                       prompt, cond, conditioning_scale,
                                       residuals=None if batched is None else next(batched))
            latents = self.scheduler.step(noise_pred, t, latents).prev_sample
            if callback_on_step_end is not None:
                tensors = {"latents": latents}
                outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents = outputs.pop("latents", latents)
        return latents

    def check_inputs(self, image: Any, plugins: Sequence[TaskPlugin], num_inference_steps: int | None,
                     chain_num_inference_steps: int, output_size: str, resize_mode: str,
                     chain_clip: str = "original", callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",)
                     ) -> None:
        if not isinstance(image, (PIL.Image.Image, np.ndarray)):
            raise TypeError(f"image must be a PIL image or an HxWx3 numpy array, not {type(image).__name__}.")
        if not plugins:
            raise ValueError("plugins is empty: pass at least one TaskPlugin.")
        for plugin in plugins:
            if not isinstance(plugin, TaskPlugin):
                raise TypeError(f"plugins must hold TaskPlugin objects, not {type(plugin).__name__}.")
            check_compatible(plugin, self.unet, self.image_encoder)
        if num_inference_steps is not None and num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}.")
        if chain_num_inference_steps < 1:
            raise ValueError(f"chain_num_inference_steps must be >= 1, got {chain_num_inference_steps}.")
        if chain_clip not in ("original", "current"):
            raise ValueError(f"chain_clip must be 'original' or 'current', got {chain_clip!r}.")
        if output_size not in ("input", "processed"):
            raise ValueError(f"output_size must be 'input' or 'processed', got {output_size!r}.")
        if resize_mode not in ("min", "exact"):
            raise ValueError(f"resize_mode must be 'min' or 'exact', got {resize_mode!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be among {self._callback_tensor_inputs}, "
                             f"got {unknown}.")

    # ------------------------------------------------------------------ entry point
    @torch.no_grad()
    def __call__(
        self,
        image: PIL.Image.Image | np.ndarray,
        plugins: TaskPlugin | Sequence[TaskPlugin],
        num_inference_steps: int | None = None,
        chain_num_inference_steps: int = 3,
        generator: torch.Generator | None = None,
        short_side: int | None = 512,
        resize_mode: ResizeMode = "min",
        output_size: Literal["input", "processed"] = "input",
        conditioning_scale: float = 1.0,
        output_type: Literal["pil", "np", "pt"] = "pil",
        callback_on_step_end: StepEndCallback | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        chain_latents: bool = False,
        chain_clip: ChainClip = "original",
        clip_image: PIL.Image.Image | None = None,
        return_dict: bool = True,
    ) -> DiffPluginPipelineOutput | tuple[PipelineImages]:
        r"""Restore `image` with `plugins`, in the order given.

        Args:
            image (`PIL.Image.Image` or `np.ndarray`): The photo (RGB).
            plugins ([`TaskPlugin`] or a sequence of them): Run in this order, each on the previous output.
            num_inference_steps (`int`, *optional*): Steps for the first plugin; defaults to its own setting (20).
            chain_num_inference_steps (`int`, *optional*, defaults to 3): Steps for every later plugin.
            generator (`torch.Generator`, *optional*): Makes the result reproducible.
            short_side (`int`, *optional*, defaults to 512): Process with the short side at least this
                (`resize_mode="min"`) or exactly this (`"exact"`); `None` keeps the size.
            output_size (`str`, *optional*, defaults to `"input"`): Return at the photo's own size (`"input"`)
                or at the processed size (`"processed"`, as the official code does).
            conditioning_scale (`float`, *optional*, defaults to 1.0): Multiplier on the SCB residuals.
            output_type (`str`, *optional*, defaults to `"pil"`): `"pil"`, `"np"` or `"pt"`.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*): Called
                after every denoising step of every plugin as `callback_on_step_end(pipe, step, timestep,
                callback_kwargs)`, diffusers' contract: `step` counts within the running plugin's loop
                (`pipe.plugin_index` says which plugin, `pipe.num_timesteps` how many steps it has),
                `callback_kwargs` holds the tensors named in `callback_on_step_end_tensor_inputs`, and the dict
                it returns replaces them. Setting `pipe._interrupt = True` stops the call after this step (see
                `interrupt`); an exception it raises stops it with no result.
            callback_on_step_end_tensor_inputs (`list`, *optional*, defaults to `["latents"]`): Tensors passed to
                `callback_on_step_end`, from `_callback_tensor_inputs`.
            chain_latents (`bool`, *optional*, defaults to `False`): A later plugin takes the previous one's final
                latents as its SCB condition, skipping a VAE decode and encode per link. The official chain
                decodes and re-encodes (`False`).
            chain_clip (`str`, *optional*, defaults to `"original"`): The CLIP tokens every plugin's prompt is
                made from: of the original photo (`"original"`, the official chain) or of the previous plugin's
                output (`"current"`, one more CLIP pass per link).
            clip_image (`PIL.Image.Image`, *optional*): Make the prompts from this photo's CLIP tokens instead of
                `image`'s, e.g. to continue a chain one plugin at a time.
        """
        # 1. Check inputs
        plugins = [plugins] if isinstance(plugins, TaskPlugin) else list(plugins)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        self.check_inputs(image, plugins, num_inference_steps, chain_num_inference_steps, output_size, resize_mode,
                          chain_clip, callback_on_step_end_tensor_inputs)
        self._interrupt = False
        if isinstance(image, np.ndarray):
            image = PIL.Image.fromarray(image)
        image = image.convert("RGB")

        # 2. CLIP tokens of the original photo, shared by every plugin of the chain (as the official chain does)
        clip_tokens = self.encode_clip_tokens(clip_image.convert("RGB") if clip_image is not None else image)

        # 3. Resize and normalise the photo
        width, height = self.target_size(*image.size, short_side, resize_mode)
        current = self.image_processor.preprocess(image, height=height, width=width)

        # 4. Run each plugin on the previous output
        condition = None
        for index, plugin in enumerate(plugins):
            if self.interrupt:
                break
            self._plugin_index = index
            steps = (num_inference_steps or plugin.settings.num_inference_steps) if index == 0 \
                else chain_num_inference_steps
            if index and chain_clip == "current":
                clip_tokens = self.encode_clip_tokens(self.image_processor.postprocess(current)[0])
            latents = self.restore_latents(plugin, current, clip_tokens, steps, generator, conditioning_scale,
                                           callback_on_step_end, callback_on_step_end_tensor_inputs, condition)
            last = index == len(plugins) - 1 or self.interrupt
            condition = latents if chain_latents and not last else None
            if condition is None or chain_clip == "current":
                current = self.decode(latents)

        # 5. Back to the photo's size and to the requested type
        if output_size == "input" and current.shape[-2:] != (image.height, image.width):
            current = F.interpolate(current.float(), size=(image.height, image.width), mode="bicubic",
                                    antialias=True, align_corners=False).clamp(-1, 1)
        images = self.image_processor.postprocess(current, output_type=output_type)
        self.maybe_free_model_hooks()  # type: ignore[no-untyped-call]  # diffusers leaves it unannotated
        if not return_dict:
            return (images,)
        return DiffPluginPipelineOutput(images=images)


def count_skips(unet: UNet2DConditionModel) -> int:
    """How many skip tensors the UNet's encoder keeps (12 for SD-1.x)."""
    count = 1  # conv_in
    for block in unet.down_blocks:
        # torch types a submodule attribute as `Tensor | Module`; these are ModuleLists (or None)
        count += len(block.resnets) + len(block.downsamplers or [])  # type: ignore[arg-type]
    return count


def predict_noise(
    unet: UNet2DConditionModel,
    scb: SCBNet,
    latents: torch.Tensor,
    timestep: torch.Tensor,
    prompt: torch.Tensor,
    cond: torch.Tensor,
    conditioning_scale: float = 1.0,
    residuals: tuple[torch.Tensor, ...] | None = None,
) -> torch.Tensor:
    """One denoiser call of a Task-Plugin: SCB residuals into the UNet's first skips, the prompt into every
    cross-attention. Shared by inference and training.

    `residuals`: this step's SCB output when the caller already has it (`scb_residuals` computes a whole
    schedule's in batches); the SCB then does not run here."""
    if residuals is None:
        residuals = scb(cond, timestep, prompt, conditioning_scale=conditioning_scale).down_block_res_samples
    # Under mixed-precision training the plugin's outputs come back in fp32 while the frozen UNet is fp16/bf16.
    prompt = prompt.to(unet.dtype)
    residuals = tuple(r.to(unet.dtype) for r in residuals)
    # Scalar zeros for the other skips and the mid block keep diffusers (>= 0.19) on its ControlNet path.
    zero = torch.zeros((), device=latents.device, dtype=unet.dtype)
    padding = (zero,) * (count_skips(unet) - len(residuals))
    noise: torch.Tensor = unet(
        latents,
        timestep,
        encoder_hidden_states=prompt,
        down_block_additional_residuals=residuals + padding,
        mid_block_additional_residual=zero,
    ).sample
    return noise


def scb_batch_size(latent_shape: Sequence[int], channels: int, dtype: torch.dtype, device: torch.device,
                   budget_bytes: int | None = None) -> int:
    """How many timesteps one SCB call may batch so that its activations stay within `budget_bytes` (by default
    `SCB_BATCH_BYTES` on CUDA, `SCB_BATCH_BYTES_CPU` elsewhere)."""
    if budget_bytes is None:
        budget_bytes = SCB_BATCH_BYTES if device.type == "cuda" else SCB_BATCH_BYTES_CPU
    height, width = latent_shape[-2:]
    per_timestep = height * width * channels * SCB_ACTIVATIONS_PER_ELEMENT * torch.finfo(dtype).bits // 8
    return max(1, budget_bytes // per_timestep)


def scb_residuals(
    scb: SCBNet,
    cond: torch.Tensor,
    timesteps: torch.Tensor,
    prompt: torch.Tensor,
    conditioning_scale: float = 1.0,
    per_call: int | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """The SCB's residuals for each of `timesteps` in turn, computed `per_call` timesteps per SCB call.

    The SCB sees the degraded latent, the prompt and the timestep, never the noisy latent, so a run's residuals
    are known before its first step. Batching them costs one SCB call (and its kernel launches) per chunk instead
    of per step; chunks are computed as they are needed, so at most one chunk is held. `per_call=None` batches as
    many as `scb_batch_size` allows at this latent size; 1 is the per-step path."""
    if per_call is None:
        per_call = scb_batch_size(cond.shape, scb.config["block_out_channels"][0], cond.dtype, cond.device)
    if per_call < 1:
        raise ValueError(f"per_call must be >= 1, got {per_call}.")
    for start in range(0, len(timesteps), per_call):
        chunk = timesteps[start:start + per_call]
        residuals = scb(cond, chunk, prompt, conditioning_scale=conditioning_scale).down_block_res_samples
        for i in range(len(chunk)):
            yield tuple(r[i:i + 1] for r in residuals)
        del residuals  # not held while the next chunk is computed


def _is_complete_pipeline_folder(base: str | Path) -> bool:
    index = Path(base) / "model_index.json"
    return index.is_file() and "image_encoder" in json.loads(index.read_text())
