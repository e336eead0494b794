"""Convolutional building blocks of the 3D U-Net and the per-frame tensor layout they share.

Layout: between blocks the U-Net keeps video features as frames folded into the batch,
`(b*t, c, h, w)`, sample-major (row `i*t + f` is sample i, frame f). Only the temporal layers
unfold them to `(b, c, t, h, w)`. Sub-module and parameter names match the official
state dicts (including the `temopral_conv` spelling), so released weights load as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hummingbird_t2v.models.unet_config import NORM_GROUPS


@dataclass
class FrameConditioning:
    """What every conditioned layer receives next to the features."""

    emb: Tensor  # (b*t, time_embed_dim): timestep (+ fps, + guidance) embedding, repeated per frame
    context: Tensor  # (b*t, L, context_dim): text tokens, repeated per frame
    num_frames: int


class ConditionedLayer(nn.Module):
    """Marker base: the layer's forward is `forward(h, cond: FrameConditioning)`, not `forward(h)`.

    The U-Net stages use it to decide what to pass to each of their layers.
    """


def frames_to_video(h: Tensor, num_frames: int) -> Tensor:
    """(b*t, c, h, w) -> (b, c, t, h, w)."""
    return h.unflatten(0, (-1, num_frames)).transpose(1, 2)


def video_to_frames(v: Tensor) -> Tensor:
    """(b, c, t, h, w) -> (b*t, c, h, w)."""
    return v.transpose(1, 2).flatten(0, 1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are computed in float32, whatever the model dtype (fp16 overflows otherwise)."""

    def __init__(self, num_channels: int, eps: float) -> None:
        super().__init__(NORM_GROUPS, num_channels, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        y = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return y.to(x.dtype)


def timestep_sinusoid(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(n,) values -> (n, dim) float32 sinusoid, **cos first, then sin** (the official convention).

    The frequencies are computed in the official op order (`(-ln P * i) / half`) because at t ~ 1000
    rad a different rounding of the frequency already shows up at the 1e-5 level.
    """
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device)
    freqs = torch.exp(exponent / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def embedding_mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> SiLU -> Linear, as used by `time_embed` and `fps_embedding`."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class TemporalConvBlock(nn.Module):
    """Four (GroupNorm, SiLU, [Dropout], Conv3d over time) stages plus a residual; input (b, c, t, h, w).

    The GroupNorms see the 5-D tensor, so their statistics pool over all frames of a sample.
    The last conv starts at zero so a fresh block is the identity.
    """

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        for stage in range(1, 5):
            layers: list[nn.Module] = [GroupNorm32(channels, eps=1e-5), nn.SiLU()]
            if stage > 1:  # the official first stage has no dropout, so its conv is index 2, the others' 3
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Conv3d(channels, channels, kernel_size=(3, 1, 1), padding=(1, 0, 0)))
            self.add_module(f"conv{stage}", nn.Sequential(*layers))
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        return x + h


class SpatiotemporalConv(nn.Module):
    """GroupNorm, SiLU and a 3x3x3 Conv3d over (time, height, width), added to its input (b, c, t, h, w).

    Not in VideoCrafter2, which mixes space and time in separate layers (3x3 convs within a frame,
    (3, 1, 1) convs and attention across frames at one pixel), so a filter oriented in space-time
    (frame t-1 one place to the left feeds frame t: the local form of motion one way) has to be
    assembled from several layers' channels. This conv holds such filters in one layer, and the
    channels the caption's cross-attention writes can pick which way. It starts at zero, so a fresh
    block is the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = GroupNorm32(channels, eps=1e-5)
        self.conv = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(F.silu(self.norm(x)))


class ResBlock(ConditionedLayer):
    """Per-frame residual block with an additive time embedding, followed by a temporal conv block
    (and, with ``spatiotemporal_conv``, a `SpatiotemporalConv`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        dropout: float,
        temporal_conv_dropout: float,
        spatiotemporal_conv: bool = False,
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(in_channels, eps=1e-5), nn.SiLU(), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels, eps=1e-5),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        if in_channels == out_channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(in_channels, out_channels, 1)
        self.temopral_conv = TemporalConvBlock(out_channels, temporal_conv_dropout)  # sic: official name
        self.spatiotemporal_conv = SpatiotemporalConv(out_channels) if spatiotemporal_conv else None

    def forward(self, h: Tensor, cond: FrameConditioning) -> Tensor:
        x = self.in_layers(h)
        x = x + self.emb_layers(cond.emb).to(x.dtype)[:, :, None, None]
        x = self.skip_connection(h) + self.out_layers(x)
        video = self.temopral_conv(frames_to_video(x, cond.num_frames))
        if self.spatiotemporal_conv is not None:
            video = self.spatiotemporal_conv(video)
        return video_to_frames(video)


class Downsample(nn.Module):
    """3x3 conv with stride 2 (symmetric padding 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.op(h)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: Tensor) -> Tensor:
        return self.conv(F.interpolate(h, scale_factor=2, mode="nearest"))
