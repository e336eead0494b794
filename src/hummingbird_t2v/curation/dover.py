"""DOVER video quality scorer (Wu et al., ICCV 2023), implemented without torchvision.

DOVER has two branches whose scores are fused (training-and-data spec §5.1):
- technical: a 3D Swin-T on "fragments", a 7x7 mosaic of 32x32 native-resolution patches
  (224x224), 32 frames at interval 2, 3 clips spread over the video. Its windowed attention uses
  gated relative position biases: pairs of tokens from different fragments use the usual
  relative-position table (scaled by how many fragments apart they are) and pairs inside one
  fragment use a second, fragment-local table (stages 1-3 only).
- aesthetic: a ConvNeXt-T inflated to 3D (depth-wise temporal kernels 1,3,1 repeating) on the
  whole frame resized to 224x224, 32 frames (one per 1/32 of the video).
Each branch ends in a 1x1x1-conv MLP head (768 -> 64 -> 1) whose map is averaged.

Fusion of the raw branch outputs (per video, means over clips):
    t = (technical - 0.1107) / 0.07355        a = (aesthetic + 0.08285) / 0.03774
    technical_score = sigmoid(t), aesthetic_score = sigmoid(a), overall = sigmoid(0.6104 t + 0.3896 a)
reported x100. The state-dict key names follow the released DOVER.pth (`technical_backbone.*`,
`aesthetic_backbone.*`, `technical_head.*`, `aesthetic_head.*`), so that file loads directly.

DOVER samples start frames and fragment offsets at random; here the generator is seeded per
video so scores are reproducible.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hummingbird_t2v.curation.config import DoverConfig
from hummingbird_t2v.errors import CheckpointError

_MEAN = torch.tensor([123.675, 116.28, 103.53])
_STD = torch.tensor([58.395, 57.12, 57.375])
TECHNICAL_SHIFT, TECHNICAL_SCALE = 0.1107, 0.07355
AESTHETIC_SHIFT, AESTHETIC_SCALE = -0.08285, 0.03774
TECHNICAL_WEIGHT, AESTHETIC_WEIGHT = 0.6104, 0.3896


@dataclass(frozen=True)
class DoverArchitecture:
    """Sizes of both branches; the defaults are the released model (swin_tiny_grpb + conv_tiny)."""

    swin_embed_dim: int = 96
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    swin_window: tuple[int, int, int] = (8, 7, 7)
    swin_patch: tuple[int, int, int] = (2, 4, 4)
    swin_fragment_bias: tuple[bool, ...] = (True, True, True, False)
    convnext_dims: tuple[int, ...] = (96, 192, 384, 768)
    convnext_depths: tuple[int, ...] = (3, 3, 9, 3)
    convnext_temporal_kernels: str = "131"
    head_hidden: int = 64


@dataclass(frozen=True)
class DoverSampling:
    """The `val-l1080p` view options of dover.yml."""

    fragments: int = 7
    fragment_size: int = 32
    clip_len: int = 32
    frame_interval: int = 2
    technical_clips: int = 3
    aesthetic_size: int = 224


@dataclass(frozen=True)
class DoverScores:
    technical: float  # 0-100
    aesthetic: float  # 0-100
    overall: float  # 0-100
    raw_technical: float = float("nan")
    raw_aesthetic: float = float("nan")


def fuse(raw_technical: float, raw_aesthetic: float) -> DoverScores:
    t = (raw_technical - TECHNICAL_SHIFT) / TECHNICAL_SCALE
    a = (raw_aesthetic - AESTHETIC_SHIFT) / AESTHETIC_SCALE

    def sigmoid(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    return DoverScores(
        technical=100 * sigmoid(t),
        aesthetic=100 * sigmoid(a),
        overall=100 * sigmoid(TECHNICAL_WEIGHT * t + AESTHETIC_WEIGHT * a),
        raw_technical=raw_technical,
        raw_aesthetic=raw_aesthetic,
    )


# ----------------------------------------------------------------------------- technical branch


def _effective_window(size: tuple[int, int, int], window: tuple[int, int, int], shift: tuple[int, int, int]):
    # A dimension no larger than the window is covered by one window, which then cannot shift.
    used_window = tuple(min(s, w) for s, w in zip(size, window))
    used_shift = tuple(0 if s <= w else h for s, w, h in zip(size, window, shift))
    return used_window, used_shift


def _partition(x: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    """(B, D, H, W, C) -> (B * windows, window volume, C), windows in (d, h, w) order."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // window[0], window[0], h // window[1], window[1], w // window[2], window[2], c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window[0] * window[1] * window[2], c)


def _merge(windows: torch.Tensor, window: tuple[int, int, int], b: int, d: int, h: int, w: int) -> torch.Tensor:
    x = windows.view(b, d // window[0], h // window[1], w // window[2], window[0], window[1], window[2], -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d, h, w, -1)


@functools.lru_cache(maxsize=64)
def _shift_mask(d: int, h: int, w: int, window: tuple[int, int, int], shift: tuple[int, int, int], device: str):
    """-100 between tokens that a cyclic shift brought into one window from different regions."""
    labels = torch.zeros(1, d, h, w, 1, device=device)
    region = 0
    for ds in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for hs in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            for ws in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                labels[:, ds, hs, ws, :] = region
                region += 1
    windows = _partition(labels, window).squeeze(-1)
    difference = windows.unsqueeze(1) - windows.unsqueeze(2)
    return torch.where(difference != 0, torch.tensor(-100.0, device=device), torch.tensor(0.0, device=device))


@functools.lru_cache(maxsize=64)
def _fragment_distance(d: int, h: int, w: int, window: tuple[int, int, int], shift: tuple[int, int, int], device: str):
    """Per window, |fragment index difference| summed over axes for every token pair: (windows, N, N).

    The padded feature map is split into a 1 x window_h x window_w grid of fragments by nearest
    interpolation, so with a 224x224 mosaic each 32x32 fragment maps to one cell at every stage.
    """
    grid = torch.stack(
        torch.meshgrid(torch.arange(1), torch.arange(window[1]), torch.arange(window[2]), indexing="ij")
    ).float()
    coords = F.interpolate(grid[None], size=(d, h, w)).long().permute(0, 2, 3, 4, 1)
    coords = torch.roll(coords, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
    per_window = _partition(coords, window)
    return (per_window[:, None, :, :] - per_window[:, :, None, :]).abs().sum(-1).float().to(device)


class WindowAttention3D(nn.Module):
    def __init__(self, dim: int, window: tuple[int, int, int], heads: int, fragment_bias: bool) -> None:
        super().__init__()
        self.window = window
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        table = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        if fragment_bias:
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table, heads))
        coords = torch.stack(torch.meshgrid(*[torch.arange(s) for s in window], indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
        relative[..., 0] += window[0] - 1
        relative[..., 1] += window[1] - 1
        relative[..., 2] += window[2] - 1
        index = relative[..., 0] * (2 * window[1] - 1) * (2 * window[2] - 1) + relative[..., 1] * (2 * window[2] - 1) + relative[..., 2]
        # Persistent: the released checkpoint stores it, so a strict load expects it.
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _bias(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        # A window shrunk to a small input takes the leading count x count block of the full index, as
        # the release does; that is exact when only the temporal size shrinks ((d, h, w) token order),
        # which is the only case with 224x224 views.
        flat = self.relative_position_index[:count, :count].reshape(-1)
        relative = self.relative_position_bias_table[flat].view(count, count, -1).permute(2, 0, 1)
        fragment = None
        if hasattr(self, "fragment_position_bias_table"):
            fragment = self.fragment_position_bias_table[flat].view(count, count, -1).permute(2, 0, 1)
        return relative, fragment

    def forward(self, x: torch.Tensor, distance: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch_windows, count, channels = x.shape
        qkv = self.qkv(x).view(batch_windows, count, 3, self.heads, channels // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attention = q @ k.transpose(-2, -1)  # (B*nW, heads, N, N)
        relative, fragment = self._bias(count)
        windows = distance.shape[0]
        if fragment is not None:
            gate = distance.unsqueeze(1)  # (nW, 1, N, N): 0 inside a fragment
            bias = relative.unsqueeze(0) * gate + fragment.unsqueeze(0) * (1 - gate)
        else:
            bias = relative.unsqueeze(0)
        attention = attention.view(-1, windows, self.heads, count, count) + bias.unsqueeze(0)
        if mask is not None:
            attention = attention + mask.unsqueeze(1).unsqueeze(0)
        attention = attention.view(-1, self.heads, count, count).softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch_windows, count, channels)
        return self.proj(out)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock3D(nn.Module):
    def __init__(self, dim: int, heads: int, window: tuple[int, int, int], shift: tuple[int, int, int], fragment_bias: bool):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, heads, fragment_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, 4 * dim)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w, _ = x.shape
        window, shift = _effective_window((d, h, w), self.window, self.shift)
        x = self.norm1(x)
        pad = [(window[i] - size % window[i]) % window[i] for i, size in enumerate((d, h, w))]
        x = F.pad(x, (0, 0, 0, pad[2], 0, pad[1], 0, pad[0]))
        dp, hp, wp = x.shape[1:4]
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1], -shift[2]), dims=(1, 2, 3))
        device = str(x.device)
        mask = _shift_mask(dp, hp, wp, window, shift, device) if shifted else None
        distance = _fragment_distance(dp, hp, wp, window, shift, device)
        windows = self.attn(_partition(x, window), distance, mask)
        x = _merge(windows, window, b, dp, hp, wp)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, :d, :h, :w].contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attend(x)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:4]
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: tuple[int, int, int], fragment_bias: bool, merge: bool):
        super().__init__()
        shift = tuple(size // 2 for size in window)
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, heads, window, (0, 0, 0) if i % 2 == 0 else shift, fragment_bias) for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, H, W, C)
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed3D(nn.Module):
    def __init__(self, patch: tuple[int, int, int], dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(3, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, D, H, W, C)
        t, h, w = x.shape[2:]
        x = F.pad(x, (0, -w % self.patch[2], 0, -h % self.patch[1], 0, -t % self.patch[0]))
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


class SwinTransformer3D(nn.Module):
    def __init__(self, arch: DoverArchitecture) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed3D(arch.swin_patch, arch.swin_embed_dim)
        stages = len(arch.swin_depths)
        self.layers = nn.ModuleList(
            SwinStage(
                arch.swin_embed_dim * 2**i, arch.swin_depths[i], arch.swin_heads[i], arch.swin_window,
                arch.swin_fragment_bias[i], merge=i < stages - 1,
            )
            for i in range(stages)
        )
        self.norm = nn.LayerNorm(arch.swin_embed_dim * 2 ** (stages - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, C, T', H', W')
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x).permute(0, 4, 1, 2, 3)


# ----------------------------------------------------------------------------- aesthetic branch


class ChannelsFirstLayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(1, -1)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps).movedim(-1, 1)


class ConvNeXtBlock3D(nn.Module):
    def __init__(self, dim: int, temporal_kernel: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv3d(dim, dim, (temporal_kernel, 7, 7), padding=(temporal_kernel // 2, 3, 3), groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 4, 1, 2, 3)


class ConvNeXt3D(nn.Module):
    def __init__(self, arch: DoverArchitecture) -> None:
        super().__init__()
        dims, depths = arch.convnext_dims, arch.convnext_depths
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv3d(3, dims[0], (2, 4, 4), stride=(2, 4, 4)), ChannelsFirstLayerNorm(dims[0]))]
            + [
                nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv3d(dims[i], dims[i + 1], (1, 2, 2), stride=(1, 2, 2)))
                for i in range(len(dims) - 1)
            ]
        )
        kernels = arch.convnext_temporal_kernels
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock3D(dims[i], int(kernels[j % len(kernels)])) for j in range(depths[i])])
            for i in range(len(dims))
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class VQAHead(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc_hid = nn.Conv3d(channels, hidden, 1)
        self.fc_last = nn.Conv3d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_last(F.gelu(self.fc_hid(x)))


class DOVER(nn.Module):
    def __init__(self, arch: DoverArchitecture = DoverArchitecture()) -> None:
        super().__init__()
        self.technical_backbone = SwinTransformer3D(arch)
        self.aesthetic_backbone = ConvNeXt3D(arch)
        technical_channels = arch.swin_embed_dim * 2 ** (len(arch.swin_depths) - 1)
        self.technical_head = VQAHead(technical_channels, arch.head_hidden)
        self.aesthetic_head = VQAHead(arch.convnext_dims[-1], arch.head_hidden)

    @torch.no_grad()
    def forward(self, technical: torch.Tensor, aesthetic: torch.Tensor) -> tuple[float, float]:
        """Raw branch outputs: mean score maps over all clips, for normalised views (clips, 3, T, H, W)."""
        raw_technical = self.technical_head(self.technical_backbone(technical)).mean()
        raw_aesthetic = self.aesthetic_head(self.aesthetic_backbone(aesthetic)).mean()
        return float(raw_technical), float(raw_aesthetic)


# ----------------------------------------------------------------------------- views


def _segment_indices(frame_count: int, segments: int, length: int, interval: int, rng: np.random.Generator) -> np.ndarray:
    """`segments` runs of `length` frames at `interval`, one run at a random start in each equal segment."""
    grid = np.array([frame_count // segments * i for i in range(segments)])
    segment = frame_count // segments
    span = length * interval
    starts = rng.integers(0, segment - span, size=segments) if segment > span else np.zeros(segments, int)
    indices = np.arange(length)[None, :] * interval + starts[:, None] + grid[:, None]
    return np.mod(indices.ravel(), max(1, frame_count))


@dataclass
class _ViewBuilder:
    """Collects both views while frames stream out of the decoder, so no frame is held twice."""

    sampling: DoverSampling
    technical_indices: np.ndarray
    aesthetic_indices: np.ndarray
    rng: np.random.Generator
    technical: torch.Tensor | None = None
    aesthetic: torch.Tensor | None = None
    sources: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    grid: tuple[list[int], list[int]] | None = None
    upsample_size: tuple[int, int] | None = None
    positions: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for position, index in enumerate(self.technical_indices):
            self.positions.setdefault(int(index), []).append(("technical", position))
        for position, index in enumerate(self.aesthetic_indices):
            self.positions.setdefault(int(index), []).append(("aesthetic", position))

    def _prepare(self, height: int, width: int) -> None:
        s = self.sampling
        mosaic = s.fragments * s.fragment_size
        self.technical = torch.zeros(3, len(self.technical_indices), mosaic, mosaic)
        self.aesthetic = torch.zeros(3, len(self.aesthetic_indices), s.aesthetic_size, s.aesthetic_size)
        ratio = min(height / mosaic, width / mosaic)
        self.upsample_size = (int(height / ratio), int(width / ratio)) if ratio < 1 else None
        # The fragment grid is laid on the stored size even when the frame was upsampled to fit the
        # mosaic (the release computes it before upsampling): small videos sample their top-left part.
        groups = len(self.technical_indices) // s.clip_len
        cell_h, cell_w = height // s.fragments, width // s.fragments
        self.grid = (
            [max(0, min(cell_h * i, height - s.fragment_size)) for i in range(s.fragments)],
            [max(0, min(cell_w * i, width - s.fragment_size)) for i in range(s.fragments)],
        )

        def offsets(cell: int) -> np.ndarray:
            if cell > s.fragment_size:
                return self.rng.integers(0, cell - s.fragment_size, size=(s.fragments, s.fragments, groups))
            return np.zeros((s.fragments, s.fragments, groups), int)

        offsets_h, offsets_w = offsets(cell_h), offsets(cell_w)
        # Per temporal group, the source row/column of every mosaic pixel: one gather builds the mosaic.
        inner = np.arange(s.fragment_size)
        tops = np.asarray(self.grid[0])[:, None, None] + offsets_h  # (fragments_h, fragments_w, groups)
        lefts = np.asarray(self.grid[1])[None, :, None] + offsets_w
        self.sources = []
        for group in range(groups):
            rows = tops[:, :, group][:, None, :, None] + inner[None, :, None, None]  # (i, a, j, 1)
            cols = lefts[:, :, group][:, None, :, None] + inner[None, None, None, :]  # (i, 1, j, b)
            rows, cols = np.broadcast_arrays(rows, cols)
            self.sources.append((torch.from_numpy(rows.reshape(mosaic, mosaic)), torch.from_numpy(cols.reshape(mosaic, mosaic))))

    def add(self, index: int, rgb: np.ndarray) -> None:
        targets = self.positions.get(index)
        if not targets:
            return
        if self.technical is None:
            self._prepare(*rgb.shape[:2])
        s = self.sampling
        frame = torch.from_numpy(rgb).permute(2, 0, 1).float()
        native = frame
        if self.upsample_size is not None:  # upsampled in [0, 1], truncated back to 8 bits as the release does
            native = F.interpolate(frame[None] / 255.0, size=self.upsample_size, mode="bilinear", align_corners=False)
            native = (native[0] * 255.0).floor()
        resized = None
        for view, position in targets:
            if view == "technical":
                rows, cols = self.sources[position // s.clip_len]
                self.technical[:, position] = native[:, rows, cols]
            else:
                if resized is None:
                    # Bilinear without antialiasing and rounded to 8 bits, like torchvision's tensor Resize of the time.
                    size = (s.aesthetic_size, s.aesthetic_size)
                    resized = F.interpolate(frame[None], size=size, mode="bilinear", align_corners=False)[0]
                    resized = resized.round().clamp(0, 255)
                self.aesthetic[:, position] = resized

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sampling
        mean, std = _MEAN.view(3, 1, 1, 1), _STD.view(3, 1, 1, 1)
        technical = (self.technical - mean) / std
        aesthetic = (self.aesthetic - mean) / std
        clips = technical.shape[1] // s.clip_len
        technical = technical.view(3, clips, s.clip_len, *technical.shape[2:]).transpose(0, 1)
        return technical.contiguous(), aesthetic.unsqueeze(0)


def sample_views(path: str | os.PathLike[str], sampling: DoverSampling, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the frames DOVER samples and build (technical fragments, aesthetic resize) views."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame_count = int(stream.frames or 0)
        if frame_count <= 0:
            rate = float(stream.average_rate or 25)
            duration = float(stream.duration * stream.time_base) if stream.duration else (container.duration or 0) / 1e6
            frame_count = max(1, round(duration * rate))
    rng = np.random.default_rng(seed)
    technical = _segment_indices(frame_count, sampling.technical_clips, sampling.clip_len, sampling.frame_interval, rng)
    aesthetic = _segment_indices(frame_count, sampling.clip_len, 1, sampling.frame_interval, rng)
    builder = _ViewBuilder(sampling, technical, aesthetic, rng)
    last_needed = int(max(technical.max(), aesthetic.max()))
    decoded = -1
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            decoded = index
            if index in builder.positions:
                builder.add(index, frame.to_ndarray(format="rgb24"))
            if index >= last_needed:
                break
    if decoded < 0:
        raise ValueError(f"{path}: no decodable frame")
    if decoded < last_needed:
        # The container over-declared its length: reuse the last frames cyclically, as DOVER's modulo does.
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        for index in builder.positions:
            if index > decoded:
                builder.add(index, frames[index % len(frames)])
    return builder.tensors()


def load_dover_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read DOVER.pth (plain state dict, no code execution) or a .safetensors export."""
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"DOVER weights {file} do not exist; download DOVER.pth and pass its path")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise CheckpointError(f"cannot read DOVER weights {file}: {error}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} does not hold a state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


class DoverScorer:
    def __init__(
        self,
        state: dict[str, torch.Tensor],
        device: str = "cpu",
        seed: int = 0,
        architecture: DoverArchitecture = DoverArchitecture(),
        sampling: DoverSampling = DoverSampling(),
    ) -> None:
        model = DOVER(architecture)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
        if missing or unexpected or wrong:
            raise CheckpointError(
                "these are not DOVER weights for this architecture: "
                f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
                f"{len(wrong)} of another shape (e.g. {wrong[:3]})"
            )
        model.load_state_dict(state)
        self.model = model.to(device).eval()
        self.device = device
        self.seed = seed
        self.sampling = sampling

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: object) -> DoverScorer:
        return cls(load_dover_state(path), **kwargs)  # type: ignore[arg-type]

    def score_views(self, technical: torch.Tensor, aesthetic: torch.Tensor) -> DoverScores:
        raw_technical, raw_aesthetic = self.model(technical.to(self.device), aesthetic.to(self.device))
        return fuse(raw_technical, raw_aesthetic)

    def score_file(self, path: str | os.PathLike[str]) -> DoverScores:
        # The seed depends on the file name only, so a clip scores the same in any run or worker.
        seed = (self.seed * 1_000_003 + int.from_bytes(Path(path).name.encode()[:8].ljust(8, b"\0"), "little")) % 2**32
        technical, aesthetic = sample_views(path, self.sampling, seed)
        return self.score_views(technical, aesthetic)


_SCORERS: dict[tuple[str, str, int], DoverScorer] = {}
_SCORERS_LOCK = threading.Lock()


def cached_scorer(config: DoverConfig) -> DoverScorer:
    """One scorer per worker process (model loading is far slower than scoring one clip)."""
    if not config.weights:
        raise CheckpointError("quality.dover.weights is not set")
    key = (str(Path(config.weights).resolve()), config.device, config.seed)
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = DoverScorer.from_file(config.weights, device=config.device, seed=config.seed)
        return _SCORERS[key]
