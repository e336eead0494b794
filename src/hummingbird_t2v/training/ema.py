"""Exponential moving average of the trainable network's weights.

The average lives in a separate fp32 copy of the module (in eval mode, never trained), so it can
be sampled from and exported as it is. Buffers are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMAModel:
    """`shadow = decay * shadow + (1 - decay) * live` after every optimizer step."""

    def __init__(self, module: nn.Module, decay: float, *, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.module = copy.deepcopy(module).float().eval().requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        decay = self.current_decay()
        shadow = dict(self.module.named_parameters())
        pairs = [(shadow[name], param) for name, param in live.named_parameters() if name in shadow]
        for ema_param, live_param in pairs:
            # lerp_(live, w) = shadow + w * (live - shadow), with w = 1 - decay.
            ema_param.lerp_(live_param.detach().to(ema_param.dtype), 1.0 - decay)
        shadow_buffers = dict(self.module.named_buffers())
        for name, buffer in live.named_buffers():
            if name in shadow_buffers:
                shadow_buffers[name].copy_(buffer)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state_dict: dict[str, torch.Tensor], num_updates: int) -> None:
        self.module.load_state_dict(state_dict, strict=True)
        self.num_updates = num_updates
