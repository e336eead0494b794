"""The VideoCrafter2 / Hummingbird 3D U-Net: one configurable module for the teacher and both students.

Structure (architecture spec, sections (a) and (b)): an input conv and optional `init_attn`
temporal transformer, `input_blocks` of [ResBlock, SpatialTransformer, TemporalTransformer]
units with Downsamples between levels, an optional `middle_block`, `output_blocks` that
concatenate the skip features, and the `out` head. Frames are folded into the batch
between blocks (see `unet_blocks`). State-dict names and order equal the official ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.attention import SpatialTransformer, TemporalTransformer
from hummingbird_t2v.models.unet_blocks import (
    ConditionedLayer,
    Downsample,
    FrameConditioning,
    GroupNorm32,
    ResBlock,
    SpatiotemporalConv,
    Upsample,
    embedding_mlp,
    frames_to_video,
    timestep_sinusoid,
    video_to_frames,
)
from hummingbird_t2v.models.unet_config import UNetConfig


class UNetStage(nn.ModuleList):
    """One entry of `input_blocks` / `output_blocks`, or `middle_block` / `init_attn`: layers run in order."""

    def forward(self, h: Tensor, cond: FrameConditioning) -> Tensor:
        for layer in self:
            h = layer(h, cond) if isinstance(layer, ConditionedLayer) else layer(h)
        return h


class UNet3D(nn.Module):
    """Text- (and fps-, optionally guidance-) conditioned denoiser for (b, c, t, h, w) video latents."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        # Recompute each stage in backward instead of storing activations (training only).
        self.gradient_checkpointing = False
        c = config
        emb_dim = c.time_embed_dim

        self.time_embed = embedding_mlp(c.model_channels, emb_dim)
        self.fps_embedding = embedding_mlp(c.model_channels, emb_dim) if c.fps_cond else None
        self.time_cond_proj = (
            nn.Linear(c.time_cond_proj_dim, c.model_channels, bias=False) if c.time_cond_proj_dim else None
        )
        self.frame_embedding = _zero_output(embedding_mlp(c.model_channels, emb_dim)) if c.frame_position_embedding else None
        self.frame_caption_embedding = _frame_caption_mlp(c) if c.frame_caption_embedding else None

        self.input_blocks = nn.ModuleList([UNetStage([nn.Conv2d(c.in_channels, c.model_channels, 3, padding=1)])])
        skip_widths = [c.model_channels]
        ch, ds = c.model_channels, 1
        last_level = len(c.channel_mult) - 1
        for level, width in enumerate(c.level_widths):
            for _ in range(c.blocks_per_level[level]):
                self.input_blocks.append(UNetStage([self._res_block(ch, width), *self._attention(width, ds)]))
                ch = width
                skip_widths.append(ch)
            if level != last_level:
                self.input_blocks.append(UNetStage([Downsample(ch)]))
                skip_widths.append(ch)
                ds *= 2

        # Registered after input_blocks so that the state-dict order matches the official one.
        self.init_attn = (
            UNetStage(
                [
                    TemporalTransformer(
                        c.model_channels,
                        c.init_attn_heads,
                        c.num_head_channels,
                        c.transformer_depth,
                        linear_projections=False,
                    )
                ]
            )
            if c.use_init_attn
            else None
        )
        self.middle_block = (
            UNetStage([self._res_block(ch, ch), *self._attention(ch, ds, always=True), self._res_block(ch, ch)])
            if c.use_middle_block
            else None
        )

        self.output_blocks = nn.ModuleList()
        for level in reversed(range(len(c.channel_mult))):
            width = c.level_widths[level]
            blocks = c.blocks_per_level[level]
            for i in range(blocks + 1):
                layers = [self._res_block(ch + skip_widths.pop(), width), *self._attention(width, ds)]
                ch = width
                if level > 0 and i == blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(UNetStage(layers))

        self.out = nn.Sequential(GroupNorm32(ch, eps=1e-5), nn.SiLU(), nn.Conv2d(ch, c.out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _res_block(self, in_channels: int, out_channels: int) -> ResBlock:
        c = self.config
        return ResBlock(
            in_channels, out_channels, c.time_embed_dim, c.dropout, c.temporal_conv_dropout, c.spatiotemporal_conv
        )

    def _attention(self, width: int, ds: int, always: bool = False) -> list[nn.Module]:
        c = self.config
        if not always and ds not in c.attention_resolutions:
            return []
        heads = c.attention_heads(width)
        return [
            SpatialTransformer(width, heads, c.num_head_channels, c.transformer_depth, c.context_dim),
            TemporalTransformer(width, heads, c.num_head_channels, c.temporal_transformer_depth),
        ]

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    # ----------------------------------------------------------------------------------------- forward

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor | int | float,
        context: Tensor,
        fps: Tensor | int | float | None = None,
        timestep_cond: Tensor | None = None,
    ) -> Tensor:
        """Predict noise for `x` (b, c, t, h, w).

        timesteps: (b,), (1,), a 0-d tensor or a number. context: (b, L, context_dim) text tokens.
        fps: (b,), a number, or None for `config.default_fps`. timestep_cond: (b, time_cond_proj_dim),
        the already-embedded guidance scale; required exactly when the config has `time_cond_proj_dim`.
        Returns a tensor shaped like `x`, in `x`'s dtype.
        """
        self._check_inputs(x, context, timestep_cond)
        c = self.config
        b, _, frames, _, _ = x.shape
        dtype = self.out[-1].weight.dtype
        emb = self._embedding(b, x.device, dtype, timesteps, fps, timestep_cond).repeat_interleave(frames, dim=0)
        if self.frame_embedding is not None or self.frame_caption_embedding is not None:
            # Rows are sample-major (b*t): the per-frame table repeats once per sample.
            index = timestep_sinusoid(torch.arange(frames, device=x.device), c.model_channels).to(dtype)
            if self.frame_embedding is not None:
                emb = emb + self.frame_embedding(index).repeat(b, 1)
            if self.frame_caption_embedding is not None:
                pooled = context.to(dtype).mean(dim=1)  # (b, context_dim): the whole caption, one vector
                pairs = torch.cat([index.repeat(b, 1), pooled.repeat_interleave(frames, dim=0)], dim=1)
                emb = emb + self.frame_caption_embedding(pairs)
        cond = FrameConditioning(
            emb=emb,
            context=context.to(dtype).repeat_interleave(frames, dim=0),
            num_frames=frames,
        )

        h = video_to_frames(x.to(dtype))
        skips = []
        for index, stage in enumerate(self.input_blocks):
            h = self._run(stage, h, cond)
            if index == 0 and self.init_attn is not None:
                h = self._run(self.init_attn, h, cond)
            skips.append(h)
        if self.middle_block is not None:
            h = self._run(self.middle_block, h, cond)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), cond)
        y = self.out(h)
        return frames_to_video(y, frames).contiguous().to(x.dtype)

    def _run(self, stage: UNetStage, h: Tensor, cond: FrameConditioning) -> Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(stage, h, cond, use_reentrant=False)
        return stage(h, cond)

    def _embedding(
        self,
        batch: int,
        device: torch.device,
        dtype: torch.dtype,
        timesteps: Tensor | int | float,
        fps: Tensor | int | float | None,
        timestep_cond: Tensor | None,
    ) -> Tensor:
        c = self.config
        t_emb = timestep_sinusoid(_per_sample(timesteps, batch, device, "timesteps"), c.model_channels).to(dtype)
        if self.time_cond_proj is not None:
            # The guidance embedding joins the raw sinusoid, before the time MLP.
            t_emb = t_emb + self.time_cond_proj(timestep_cond.to(dtype))
        emb = self.time_embed(t_emb)
        if self.fps_embedding is not None:
            fps_values = _per_sample(c.default_fps if fps is None else fps, batch, device, "fps")
            emb = emb + self.fps_embedding(timestep_sinusoid(fps_values, c.model_channels).to(dtype))
        return emb

    def _check_inputs(self, x: Tensor, context: Tensor, timestep_cond: Tensor | None) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels:
            raise ConfigError(
                f"U-Net input must be (batch, {c.in_channels}, frames, height, width), got {tuple(x.shape)}"
            )
        factor = 2 ** (len(c.channel_mult) - 1)
        if x.shape[3] % factor or x.shape[4] % factor:
            raise ConfigError(
                f"latent height and width must be multiples of {factor} (the U-Net downsamples "
                f"{len(c.channel_mult) - 1} times), got {x.shape[3]}x{x.shape[4]}"
            )
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[2] != c.context_dim:
            raise ConfigError(
                f"context must be (batch={x.shape[0]}, tokens, {c.context_dim}), got {tuple(context.shape)}"
            )
        if c.time_cond_proj_dim is None:
            if timestep_cond is not None:
                raise ConfigError(
                    "this U-Net has no guidance projection (time_cond_proj_dim is None): "
                    "pass timestep_cond=None or use a student config with time_cond_proj_dim"
                )
        elif timestep_cond is None:
            raise ConfigError(
                f"this U-Net is guidance-conditioned (time_cond_proj_dim={c.time_cond_proj_dim}): pass "
                "timestep_cond, the (batch, dim) embedding of the guidance scale"
            )
        elif tuple(timestep_cond.shape) != (x.shape[0], c.time_cond_proj_dim):
            raise ConfigError(
                f"timestep_cond must be (batch={x.shape[0]}, {c.time_cond_proj_dim}), got {tuple(timestep_cond.shape)}"
            )


def _zero_output(mlp: nn.Sequential) -> nn.Sequential:
    """An embedding MLP whose output starts at zero, so that adding it changes nothing at first."""
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


def extend_unet(
    unet: UNet3D, config: UNetConfig, what: str, place_new: Callable[[UNet3D, torch.device, torch.dtype], None]
) -> UNet3D:
    """A U-Net of ``config`` holding ``unet``'s weights (shared, not copied) plus new modules.

    The U-Net of ``config`` is built on the meta device; ``place_new(extended, device, dtype)``
    replaces its new modules by initialised ones on ``unet``'s device and dtype, and every other
    tensor must then come from ``unet`` (``what`` names the addition in the error).
    """
    weight = next(unet.parameters())
    with torch.device("meta"):
        extended = UNet3D(config)
    place_new(extended, weight.device, weight.dtype)
    _, unexpected = extended.load_state_dict(unet.state_dict(), strict=False, assign=True)
    left_empty = [name for name, tensor in extended.state_dict().items() if tensor.is_meta]
    if unexpected or left_empty:
        raise ConfigError(f"cannot add {what} to this U-Net: not filled {left_empty[:5]}, unexpected {unexpected[:5]}")
    extended.train(unet.training)
    return extended


def add_frame_position_embedding(unet: UNet3D) -> UNet3D:
    """``unet`` with a new, zero-initialised frame position embedding: the same function until trained."""
    if unet.config.frame_position_embedding:
        raise ConfigError("this U-Net already has a frame position embedding")
    c = unet.config

    def place(extended: UNet3D, device: torch.device, dtype: torch.dtype) -> None:
        extended.frame_embedding = _zero_output(embedding_mlp(c.model_channels, c.time_embed_dim)).to(device, dtype)

    return extend_unet(unet, c.replace(frame_position_embedding=True), "a frame position embedding", place)


def _frame_caption_mlp(c: UNetConfig) -> nn.Sequential:
    return _zero_output(embedding_mlp(c.model_channels + c.context_dim, c.time_embed_dim))


def add_frame_caption_embedding(unet: UNet3D) -> UNet3D:
    """``unet`` with a new, zero-initialised frame-and-caption embedding: the same function until trained."""
    if unet.config.frame_caption_embedding:
        raise ConfigError("this U-Net already has a frame-and-caption embedding")
    c = unet.config.replace(frame_caption_embedding=True)

    def place(extended: UNet3D, device: torch.device, dtype: torch.dtype) -> None:
        extended.frame_caption_embedding = _frame_caption_mlp(c).to(device, dtype)

    return extend_unet(unet, c, "a frame-and-caption embedding", place)


def add_spatiotemporal_convs(unet: UNet3D) -> UNet3D:
    """``unet`` with a new, zero-initialised `SpatiotemporalConv` in every ResBlock: the same function until trained."""
    if unet.config.spatiotemporal_conv:
        raise ConfigError("this U-Net already has spatiotemporal convs")

    def place(extended: UNet3D, device: torch.device, dtype: torch.dtype) -> None:
        for block in extended.modules():
            if isinstance(block, ResBlock) and block.spatiotemporal_conv is not None:
                channels = block.spatiotemporal_conv.conv.in_channels
                block.spatiotemporal_conv = SpatiotemporalConv(channels).to(device, dtype)

    return extend_unet(unet, unet.config.replace(spatiotemporal_conv=True), "spatiotemporal convs", place)


def _per_sample(value: Tensor | int | float, batch: int, device: torch.device, name: str) -> Tensor:
    """A number, 0-d, (1,) or (batch,) tensor -> (batch,) tensor (no data-dependent ops: works on meta)."""
    if not isinstance(value, Tensor):
        return torch.full((batch,), value, device=device)
    if value.ndim == 0 or tuple(value.shape) == (1,):
        return value.reshape(1).expand(batch).to(device)
    if tuple(value.shape) != (batch,):
        raise ConfigError(f"{name} must be a number or a tensor of shape ({batch},), got shape {tuple(value.shape)}")
    return value.to(device)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
