"""Text -> video: `HummingbirdPipeline`, diffusers-style, for the distilled students and the teacher.

Students (a U-Net with a guidance projection) sample with the multistep consistency sampler, one U-Net
pass per step; the teacher (no guidance projection) samples with DDIM and classifier-free guidance.
Both go through the same call, so a user can compare them with one line changed. A model folder may
also hold a `prior` (models/caption_prior.py): the caption's mean latent clip, which the sampler's
starting noise is shifted by, because the schedule's terminal SNR is not zero.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    INDEX_NAME,
    default_permissions,
    load_component,
    read_json,
    save_component,
    write_json,
)
from hummingbird_t2v.diffusion.consistency import (
    consistency_timesteps,
    sample_consistency,
)
from hummingbird_t2v.diffusion.ddim import ddim_timesteps, sample_ddim_cfg
from hummingbird_t2v.diffusion.guidance import guidance_scale_embedding
from hummingbird_t2v.diffusion.schedule import (
    scaled_linear_alphas_cumprod,
    vc2_latent_scale_table,
)
from hummingbird_t2v.errors import CheckpointError, ConfigError
from hummingbird_t2v.models.registry import build_component, component_class_name
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_config import UNetConfig, get_unet_preset
from hummingbird_t2v.models.vae import VideoVAE
from hummingbird_t2v.pipelines.config import PipelineConfig

OutputType = Literal["np", "pt", "pil", "latent"]


@dataclass
class HummingbirdPipelineOutput:
    """`frames`: np (b, T, H, W, 3) float in [0, 1]; pt (b, T, 3, H, W) in [0, 1]; pil: per video a list of
    images; latent: the scaled latent (b, 4, T, h, w)."""

    frames: Any


def _validate_prompts(prompt: str | Sequence[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ConfigError("no prompt given; pass a prompt string or a non-empty list of prompts")
    for index, text in enumerate(prompts):
        if not isinstance(text, str):
            raise ConfigError(f"prompt {index} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise ConfigError(f"prompt {index} is empty; describe the video you want, e.g. 'a red ball bouncing'")
    return prompts


class HummingbirdPipeline:
    """U-Net + VAE + text encoder (which tokenizes itself) + how to sample them, and optionally a
    caption prior (`CaptionMeanPrior`) that sets the mean of the starting noise."""

    COMPONENTS = ("unet", "vae", "text_encoder")
    OPTIONAL_COMPONENTS = ("prior",)

    def __init__(
        self,
        unet: UNet3D,
        vae: VideoVAE,
        text_encoder: torch.nn.Module,
        config: PipelineConfig | None = None,
        prior: torch.nn.Module | None = None,
    ) -> None:
        if config is None:
            config = PipelineConfig.for_sampler("consistency" if unet.config.time_cond_proj_dim else "ddim")
        if config.sampler == "consistency" and not unet.config.time_cond_proj_dim:
            raise ConfigError("the consistency sampler needs a student U-Net with a guidance projection (time_cond_proj_dim)")
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.config = config
        self.prior = prior

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The modules this pipeline holds, by folder name (the optional ones only when present)."""
        present = {name: getattr(self, name) for name in self.COMPONENTS + self.OPTIONAL_COMPONENTS}
        return {name: module for name, module in present.items() if module is not None}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        *,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        model: str | None = None,
        **single_file_options: Any,
    ) -> HummingbirdPipeline:
        """Load a model folder (`hummingbird convert` output), a single checkpoint file in any supported
        format, or a Hugging Face hub id holding either. `model` names the U-Net preset the weights must
        match (vc2, hb-0.9b, hb-0.7b, ...); a mismatch is an error instead of a surprise."""
        from hummingbird_t2v.checkpoints.hub import resolve_checkpoint

        path = resolve_checkpoint(str(path_or_id))
        if path.is_dir():
            return cls._from_folder(path, torch_dtype=torch_dtype, device=device, model=model)
        from hummingbird_t2v.pipelines.single_file import load_pipeline_components

        parts = load_pipeline_components(path, model=model, **single_file_options)
        pipe = cls(parts.unet, parts.vae, parts.text_encoder)
        return pipe.to(device=device, dtype=torch_dtype)

    @classmethod
    def _from_folder(
        cls, folder: Path, *, torch_dtype: torch.dtype | None, device: torch.device | str, model: str | None
    ) -> HummingbirdPipeline:
        index = read_json(folder / INDEX_NAME)
        config = PipelineConfig.from_dict(index)
        if model is not None:
            expected = get_unet_preset(model)
            found = UNetConfig.from_dict(read_json(folder / "unet" / CONFIG_NAME))
            if found != expected:
                raise CheckpointError(
                    f"{folder} does not fit the '{model}' U-Net: its unet/config.json describes another structure; "
                    "drop --model or pick the matching preset"
                )
        classes = index.get("components", {})
        if not set(cls.COMPONENTS) <= set(classes) <= set(cls.COMPONENTS + cls.OPTIONAL_COMPONENTS):
            raise CheckpointError(
                f"{folder / INDEX_NAME} must name the class of each of {cls.COMPONENTS} (and optionally "
                f"{cls.OPTIONAL_COMPONENTS}) under 'components'; re-create the folder with `hummingbird convert`"
            )
        modules = {
            name: load_component(
                folder / name, lambda c, n=name: build_component(classes[n], c), dtype=torch_dtype, device=device
            )
            for name in classes
        }
        return cls(**modules, config=config)

    def save_pretrained(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write the model folder next to `folder` under a temporary name, then move it into place."""
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise ConfigError(f"{folder} already exists and is not empty; choose a new folder or pass overwrite=True")
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            classes = {}
            for name, module in self.components.items():
                classes[name] = component_class_name(module)
                save_component(staging / name, module, module.config.to_dict())
            write_json(staging / INDEX_NAME, {**self.config.to_dict(), "components": classes})
            default_permissions(staging)
            if folder.exists():
                shutil.rmtree(folder)
            staging.rename(folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return folder

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> HummingbirdPipeline:
        for module in self.components.values():
            module.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's factor times the U-Net's downsamplings."""
        return self.vae.config.downsample_factor * 2 ** (len(self.unet.config.channel_mult) - 1)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> torch.Tensor:
        return self.text_encoder.encode(prompts).to(self.dtype)

    def _check_sizes(self, num_frames: int, height: int, width: int, steps: int) -> None:
        if num_frames < 1:
            raise ConfigError(f"num_frames must be at least 1, got {num_frames}")
        if steps < 1:
            raise ConfigError(f"num_inference_steps must be at least 1, got {steps}")
        multiple = self.spatial_multiple
        for name, value in (("height", height), ("width", width)):
            if value < multiple or value % multiple:
                raise ConfigError(
                    f"{name} must be a positive multiple of {multiple} for this model "
                    f"(VAE factor x U-Net downsamplings), got {value}; "
                    f"try {max(multiple, round(value / multiple) * multiple)}"
                )

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        fps: int | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        prior_strength: float | None = None,
        gamma: float | None = None,
        output_type: OutputType = "np",
        decode_chunk_size: int = 8,
        progress: bool = True,
        callback: Callable[[Any], None] | None = None,
    ) -> HummingbirdPipelineOutput:
        """Generate one video per prompt. `generator` (a torch.Generator on the CPU or the pipeline's device)
        makes the result reproducible; `negative_prompt` replaces the empty unconditional prompt of the
        teacher's classifier-free guidance (students have no unconditional pass). `latents` is the
        starting noise; with a caption prior it is shifted by `prior_strength` (default the model's,
        1 unless its model_index.json says otherwise) times the prior's mean at the first timestep (0
        ignores the prior; 1 matches the training marginal's mean). `gamma`
        (consistency sampler only; default the model's `consistency_gamma`) is the share of each
        step's noise drawn fresh: 1 samples as LCM does, 0 deterministically."""
        defaults = self.config.defaults
        num_frames = defaults.num_frames if num_frames is None else num_frames
        height = defaults.height if height is None else height
        width = defaults.width if width is None else width
        steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance_scale = defaults.guidance_scale if guidance_scale is None else guidance_scale
        fps = defaults.fps if fps is None else fps
        prior_strength = defaults.prior_strength if prior_strength is None else prior_strength
        if output_type not in ("np", "pt", "pil", "latent"):
            raise ConfigError(f"output_type must be one of np, pt, pil, latent; got {output_type!r}")
        if gamma is not None and self.config.sampler != "consistency":
            raise ConfigError("gamma sets the consistency sampler's noise; this model samples with DDIM (drop gamma)")
        prompts = _validate_prompts(prompt)
        self._check_sizes(num_frames, height, width, steps)

        batch = len(prompts)
        context = self.encode_prompt(prompts)
        factor = self.vae.config.downsample_factor
        shape = (batch, self.unet.config.in_channels, num_frames, height // factor, width // factor)
        if latents is None:
            latents = torch.randn(shape, generator=generator, device=generator.device if generator else self.device)
        elif tuple(latents.shape) != shape:
            raise ConfigError(f"latents have shape {tuple(latents.shape)}, expected {shape} for these sizes")
        latents = latents.to(device=self.device, dtype=self.dtype)
        alphas_cumprod = self._alphas_cumprod()
        if self.prior is not None and prior_strength != 0:
            first = int(self._timesteps(steps)[0])
            mean = self.prior(context, num_frames, height // factor, width // factor).to(self.dtype)
            # E[z_t | c] = sqrt(alpha_bar_t) * s(t) * E[z0 | c], s(t) being VC2's latent scale where the
            # model was trained with it. Only the mean moves: the noise keeps unit variance, so strength
            # 0 and no prior agree (the training marginal's variance, 1 - alpha_bar, is within 1 % of 1).
            shift = alphas_cumprod[first].sqrt()
            if self.config.use_scale and self.config.sampler == "ddim":
                shift = shift * float(vc2_latent_scale_table(self.config.num_train_timesteps, scale_b=self.config.scale_b)[first])
            latents = latents + prior_strength * shift * mean

        bar = tqdm(total=steps, desc="sampling", unit="step", disable=not progress, leave=False)

        def on_step(step: Any) -> None:
            bar.update(1)
            if callback is not None:
                callback(step)

        fps_tensor = torch.full((batch,), int(fps), dtype=torch.long, device=self.device)
        try:
            if self.config.sampler == "consistency":
                w = torch.full((batch,), float(guidance_scale), device=self.device)
                cond = {"context": context, "fps": fps_tensor, "timestep_cond": guidance_scale_embedding(w).to(self.dtype)}
                latents = sample_consistency(
                    self.unet,
                    latents,
                    cond,
                    num_steps=steps,
                    alphas_cumprod=alphas_cumprod,
                    origin_steps=self.config.origin_steps,
                    generator=generator,
                    callback=on_step,
                    gamma=self.config.consistency_gamma if gamma is None else gamma,
                )
            else:
                negative = [""] * batch if negative_prompt is None else _negatives(negative_prompt, batch)
                uncond = {"context": self.encode_prompt(negative), "fps": fps_tensor}
                latents = sample_ddim_cfg(
                    self.unet,
                    latents,
                    {"context": context, "fps": fps_tensor},
                    uncond,
                    num_steps=steps,
                    eta=self.config.ddim_eta,
                    guidance_scale=guidance_scale,
                    use_scale=self.config.use_scale,
                    scale_b=self.config.scale_b,
                    alphas_cumprod=alphas_cumprod,
                    generator=generator,
                    callback=on_step,
                )
        finally:
            bar.close()

        if output_type == "latent":
            return HummingbirdPipelineOutput(frames=latents)
        video = self.vae.decode(latents, chunk_size=decode_chunk_size)  # (b, 3, T, H, W) in [-1, 1]
        video = ((video.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 1, 3, 4).cpu()  # (b, T, 3, H, W)
        if output_type == "pt":
            return HummingbirdPipelineOutput(frames=video)
        frames = video.permute(0, 1, 3, 4, 2).numpy()
        if output_type == "np":
            return HummingbirdPipelineOutput(frames=frames)
        from PIL import Image

        return HummingbirdPipelineOutput(
            frames=[[Image.fromarray(to_uint8(frame)) for frame in clip] for clip in frames]
        )

    def _timesteps(self, steps: int) -> torch.Tensor:
        """The training timesteps the configured sampler visits, first one first."""
        num_train_timesteps = self.config.num_train_timesteps
        if self.config.sampler == "consistency":
            return consistency_timesteps(steps, self.config.origin_steps, num_train_timesteps)
        return ddim_timesteps(steps, num_train_timesteps)

    def _alphas_cumprod(self) -> torch.Tensor:
        # The two samplers were recorded with different precisions of the same schedule (see diffusion/schedule.py).
        precision = "float32" if self.config.sampler == "consistency" else "float64_then_float32"
        return scaled_linear_alphas_cumprod(
            self.config.num_train_timesteps, self.config.beta_start, self.config.beta_end, precision=precision
        ).to(self.device)


def _negatives(negative_prompt: str | Sequence[str], batch: int) -> list[str]:
    negatives = [negative_prompt] * batch if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != batch:
        raise ConfigError(f"got {len(negatives)} negative prompts for {batch} prompts; pass one per prompt or a single string")
    return negatives


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8 with rounding."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe version of a prompt."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:max_length].rstrip("_") or "video"
