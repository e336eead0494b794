"""Frame-wise video VAE: the SD-1.x KL-f8 image autoencoder applied to every frame of a clip.

VideoCrafter2 and Hummingbird have no video autoencoder: frames are folded into the batch for
encoding and decoded one slice at a time. The autoencoder itself is diffusers' `AutoencoderKL`,
whose structure equals the original LDM one (GroupNorm eps 1e-6, asymmetric zero-pad before the
stride-2 downsampling convs, one single-head attention block in each mid block, nearest-x2
upsampling); only parameter names differ (see `hummingbird_t2v.checkpoints.vae_keys`).

Latents are scaled by 0.18215 so that they have roughly unit variance, as the diffusion model
expects: `encode` returns scaled latents, `decode` takes scaled latents.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from diffusers import AutoencoderKL
from torch import nn

from hummingbird_t2v.errors import ConfigError

SD_SCALING_FACTOR = 0.18215


@dataclass(frozen=True)
class VAEConfig:
    """Shape of a KL autoencoder with the LDM layout (`ch`, `ch_mult`, `num_res_blocks`, `z_channels`)."""

    in_channels: int = 3
    out_channels: int = 3
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512  # training resolution; diffusers only uses it to size tiles
    scaling_factor: float = SD_SCALING_FACTOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        if not self.channel_multipliers:
            raise ConfigError("VAEConfig.channel_multipliers must not be empty")
        for width in self.block_out_channels:
            if width % self.norm_num_groups:
                raise ConfigError(
                    f"VAE block width {width} is not divisible by norm_num_groups={self.norm_num_groups}; "
                    "choose base_channels/channel_multipliers that are"
                )
        if self.layers_per_block < 1 or self.latent_channels < 1 or self.scaling_factor <= 0:
            raise ConfigError(
                "VAEConfig needs layers_per_block >= 1, latent_channels >= 1 and a positive scaling_factor"
            )

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_multipliers)

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for the SD VAE)."""
        return 2 ** (len(self.channel_multipliers) - 1)

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        """"sd": the SD-1.x KL-f8 VAE used by VideoCrafter2/Hummingbird (83.65 M params);
        "tiny": the golden test model (32 base channels, 1.40 M params)."""
        presets = {
            "sd": cls(),
            "tiny": cls(base_channels=32, channel_multipliers=(1, 1, 2, 2), sample_size=32),
        }
        if name not in presets:
            raise ConfigError(f"unknown VAE preset {name!r}; choose one of {sorted(presets)}")
        return presets[name]

    @classmethod
    def from_ldm_config(cls, ddconfig: dict[str, Any], embed_dim: int) -> VAEConfig:
        """Translate the official `first_stage_config.params` (`ddconfig`, `embed_dim`)."""
        required = ("ch", "ch_mult", "num_res_blocks", "z_channels")
        missing = [key for key in required if key not in ddconfig]
        if missing:
            raise ConfigError(f"VAE ddconfig lacks {missing}; it needs {list(required)}")
        if not ddconfig.get("double_z", True):
            raise ConfigError("VAE ddconfig has double_z=false; only the KL autoencoder (double_z=true) is supported")
        if embed_dim != ddconfig["z_channels"]:
            raise ConfigError(
                f"VAE embed_dim={embed_dim} differs from z_channels={ddconfig['z_channels']}; "
                "diffusers' AutoencoderKL needs them equal"
            )
        if ddconfig.get("attn_resolutions"):
            raise ConfigError(
                f"VAE ddconfig has attn_resolutions={ddconfig['attn_resolutions']}; only autoencoders "
                "with attention in the mid blocks alone (attn_resolutions: []) are supported"
            )
        return cls(
            in_channels=int(ddconfig.get("in_channels", 3)),
            out_channels=int(ddconfig.get("out_ch", 3)),
            base_channels=int(ddconfig["ch"]),
            channel_multipliers=tuple(ddconfig["ch_mult"]),
            layers_per_block=int(ddconfig["num_res_blocks"]),
            latent_channels=int(ddconfig["z_channels"]),
            sample_size=int(ddconfig.get("resolution", 512)),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["channel_multipliers"] = list(self.channel_multipliers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown VAEConfig fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)

    def diffusers_kwargs(self) -> dict[str, Any]:
        """Arguments for `diffusers.AutoencoderKL` that build this autoencoder."""
        levels = len(self.channel_multipliers)
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": self.norm_num_groups,
            "sample_size": self.sample_size,
            "scaling_factor": self.scaling_factor,
        }


def _fold_frames(video: torch.Tensor) -> torch.Tensor:
    """(b, c, t, h, w) -> (b*t, c, h, w), frames of one sample contiguous."""
    b, c, t, h, w = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _unfold_frames(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """(b*t, c, h, w) -> (b, c, t, h, w)."""
    bt, c, h, w = frames.shape
    return frames.reshape(batch, bt // batch, c, h, w).permute(0, 2, 1, 3, 4)


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive number of frames or None, got {chunk_size}")


class VideoVAE(nn.Module):
    """Encode (b, 3, t, H, W) videos in [-1, 1] to scaled latents (b, 4, t, H/8, W/8) and back."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        self.autoencoder = AutoencoderKL(**self.config.diffusers_kwargs())

    @classmethod
    def from_ldm_config(cls, ddconfig: dict[str, Any], embed_dim: int) -> VideoVAE:
        return cls(VAEConfig.from_ldm_config(ddconfig, embed_dim))

    @property
    def scaling_factor(self) -> float:
        return self.config.scaling_factor

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _check_frames(self, frames: torch.Tensor, channels: int, ndim: int, what: str) -> None:
        if frames.ndim != ndim or frames.shape[1] != channels:
            layout = "(b, c, t, h, w)" if ndim == 5 else "(n, c, h, w)"
            raise ConfigError(
                f"{what} must have the layout {layout} with c={channels}, got shape {tuple(frames.shape)}"
            )

    def encode_frames(
        self,
        frames: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Images (n, 3, H, W) in [-1, 1] -> scaled latents (n, 4, H/8, W/8).

        `sample=False` returns the posterior mean (deterministic, what inference wants);
        `sample=True` draws from the posterior as the official training code does.
        """
        self._check_frames(frames, self.config.in_channels, 4, "frames")
        _check_chunk_size(chunk_size)
        factor = self.config.downsample_factor
        if frames.shape[-2] % factor or frames.shape[-1] % factor:
            raise ConfigError(
                f"frame size {tuple(frames.shape[-2:])} must be divisible by {factor} for this VAE; "
                "resize or crop the frames"
            )
        frames = frames.to(self.dtype)
        step = chunk_size or frames.shape[0]
        latents = []
        for chunk in frames.split(step):
            posterior = self.autoencoder.encode(chunk).latent_dist
            latents.append(posterior.sample(generator=generator) if sample else posterior.mode())
        return torch.cat(latents) * self.scaling_factor

    def decode_frames(self, latents: torch.Tensor, *, chunk_size: int | None = 8) -> torch.Tensor:
        """Scaled latents (n, 4, h, w) -> images (n, 3, 8h, 8w), at most `chunk_size` frames at once."""
        self._check_frames(latents, self.config.latent_channels, 4, "latents")
        _check_chunk_size(chunk_size)
        latents = latents.to(self.dtype) / self.scaling_factor
        step = chunk_size or latents.shape[0]
        return torch.cat([self.autoencoder.decode(chunk).sample for chunk in latents.split(step)])

    def encode(
        self,
        frames: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Videos (b, 3, t, H, W) in [-1, 1] -> scaled latents (b, 4, t, H/8, W/8)."""
        self._check_frames(frames, self.config.in_channels, 5, "frames")
        latents = self.encode_frames(_fold_frames(frames), sample=sample, generator=generator, chunk_size=chunk_size)
        return _unfold_frames(latents, frames.shape[0])

    def decode(self, latents: torch.Tensor, *, chunk_size: int | None = 8) -> torch.Tensor:
        """Scaled latents (b, 4, t, h, w) -> videos (b, 3, t, 8h, 8w) in about [-1, 1].

        Frames are independent, so decoding `chunk_size` of them at a time bounds peak memory
        without changing the result (None decodes all frames at once).
        """
        self._check_frames(latents, self.config.latent_channels, 5, "latents")
        frames = self.decode_frames(_fold_frames(latents), chunk_size=chunk_size)
        return _unfold_frames(frames, latents.shape[0])
