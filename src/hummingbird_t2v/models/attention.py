"""Attention layers of the 3D U-Net: the transformer block and its spatial and temporal wrappers.

All attention goes through `torch.nn.functional.scaled_dot_product_attention`, which picks a
fused kernel where the device has one. Parameter names follow the official state dicts.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hummingbird_t2v.models.unet_blocks import ConditionedLayer, FrameConditioning, GroupNorm32, frames_to_video


class Attention(nn.Module):
    """Multi-head attention; keys/values come from `context` when given, else from `x` (self-attention)."""

    def __init__(self, query_dim: int, heads: int, head_dim: int, context_dim: int | None = None) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim or query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def _split_heads(self, x: Tensor) -> Tensor:
        # channel index = head * head_dim + d, as in the official weights
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        source = x if context is None else context
        q = self._split_heads(self.to_q(x))
        k = self._split_heads(self.to_k(source))
        v = self._split_heads(self.to_v(source))
        out = F.scaled_dot_product_attention(q, k, v)  # default scale 1/sqrt(head_dim)
        return self.to_out(out.transpose(1, 2).flatten(2))


class GEGLU(nn.Module):
    """Linear to twice the hidden width, then value * GELU(gate) (exact erf GELU)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # Index 1 holds the official (p=0) dropout; Identity keeps the output Linear at `net.2`.
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, then attention to `context` (or self again), then GEGLU FF."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None) -> None:
        super().__init__()
        # Registration order (attn1, ff, attn2, norms) reproduces the official state-dict order.
        self.attn1 = Attention(dim, heads, head_dim)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, head_dim, context_dim=context_dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor | None) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(ConditionedLayer):
    """Per-frame transformer over the h*w tokens of each frame, cross-attending to the text context."""

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, context_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = GroupNorm32(channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, h: Tensor, cond: FrameConditioning) -> Tensor:
        n, c, height, width = h.shape
        tokens = self.norm(h).permute(0, 2, 3, 1).reshape(n, height * width, c)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, cond.context)
        tokens = self.proj_out(tokens)
        return h + tokens.reshape(n, height, width, c).permute(0, 3, 1, 2)


class TemporalTransformer(ConditionedLayer):
    """Transformer along time: one sequence of t frames per pixel, self-attention only, no position code.

    Its GroupNorm sees the (b, c, t, h, w) tensor, so statistics pool over the frames of a sample.
    `linear_projections=False` gives the kernel-1 Conv1d projections of the official `init_attn`.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, depth: int, linear_projections: bool = True) -> None:
        super().__init__()
        inner = heads * head_dim
        self.norm = GroupNorm32(channels, eps=1e-6)
        if linear_projections:
            self.proj_in: nn.Module = nn.Linear(channels, inner)
        else:
            self.proj_in = nn.Conv1d(channels, inner, kernel_size=1)
        # Both attentions of the temporal block are self-attention over frames (no text context).
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, context_dim=None) for _ in range(depth)
        )
        if linear_projections:
            self.proj_out: nn.Module = nn.Linear(inner, channels)
        else:
            self.proj_out = nn.Conv1d(inner, channels, kernel_size=1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    @staticmethod
    def _project(layer: nn.Module, tokens: Tensor) -> Tensor:
        if isinstance(layer, nn.Conv1d):  # Conv1d wants channels before the sequence axis
            return layer(tokens.transpose(1, 2)).transpose(1, 2)
        return layer(tokens)

    def forward(self, h: Tensor, cond: FrameConditioning) -> Tensor:
        _, c, height, width = h.shape
        frames = cond.num_frames
        video = self.norm(frames_to_video(h, frames))  # (b, c, t, h, w)
        b = video.shape[0]
        tokens = video.permute(0, 3, 4, 2, 1).reshape(b * height * width, frames, c)
        tokens = self._project(self.proj_in, tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, None)
        tokens = self._project(self.proj_out, tokens)
        # (b*h*w, t, c) -> (b, t, c, h, w) -> per-frame layout
        out = tokens.reshape(b, height, width, frames, c).permute(0, 3, 4, 1, 2).reshape(b * frames, c, height, width)
        return h + out
