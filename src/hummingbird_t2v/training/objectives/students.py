"""Where a distillation objective's student comes from: a path, or pruned from the teacher on the fly.

Both distillation stages take their teacher from `model.unet` (with the VAE and text encoder of
the same model) and their student from the `objective:` section, as exactly one of

* `student: PATH` — a model folder, a U-Net folder or a checkpoint file (e.g. the output of
  `hummingbird prune --no-guidance-projection`, or of stage 1 for stage 2); or
* `layout: hb-0.9b | hb-0.7b | LAYOUT.yaml` — the student is pruned from the teacher here, its
  weights copied through the layout's block map (pruning.prune_unet), without a guidance
  projection (stage 2 adds one itself).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pruning.layouts import PruneLayout, load_layout
from hummingbird_t2v.pruning.transfer import prune_unet
from hummingbird_t2v.training.components import load_unet, unet_config_at

__all__ = ["check_student_source", "seeded", "student_config", "student_layout", "student_unet"]

logger = logging.getLogger(__name__)


def check_student_source(student: str | None, layout: str | None) -> None:
    """Raise ConfigError unless exactly one of `objective.student` / `objective.layout` is set."""
    if (student is None) == (layout is None):
        raise ConfigError(
            "set exactly one of objective.student (a model folder, U-Net folder or checkpoint of the student, "
            "e.g. the output of `hummingbird prune --no-guidance-projection`) and objective.layout "
            "(hb-0.9b, hb-0.7b or a LAYOUT.yaml: prune the student from the teacher, model.unet, on the fly)"
        )


def student_layout(layout: str, teacher: UNetConfig) -> PruneLayout:
    """The layout named by `layout`, checked against the teacher, without a guidance projection."""
    return load_layout(layout, teacher).replace(time_cond_proj_dim=None)


def student_unet(student: str | None, layout: str | None, teacher: nn.Module) -> nn.Module:
    """The student in float32: loaded from `student`, or pruned from `teacher` with `layout`.

    Pruned weights are copies, so training the student never changes the teacher.
    """
    check_student_source(student, layout)
    if student is not None:
        unet = load_unet(student, what="objective.student")
        source = str(student)
    else:
        config = getattr(teacher, "config", None)
        if not isinstance(config, UNetConfig):
            raise ConfigError("objective.layout prunes model.unet, which must then be a UNet3D")
        plan = student_layout(layout, config)
        unet = prune_unet(teacher.state_dict(), config, plan).unet
        source = f"pruned from the teacher with {layout} ({plan.describe(config)})"
    unet = unet.float()
    count = lambda module: sum(p.numel() for p in module.parameters())
    logger.info(
        "student: %s; %s parameters (teacher: %s)", source, f"{count(unet):,}", f"{count(teacher):,}"
    )
    return unet


def student_config(student: str | None, layout: str | None, teacher: UNetConfig | None) -> UNetConfig | None:
    """The student's U-Net config without loading weights (None when it lives in a checkpoint file)."""
    check_student_source(student, layout)
    if student is not None:
        return unet_config_at(student)
    if teacher is None:
        return None
    return student_layout(layout, teacher).student_config(teacher)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Draw fresh weights (guidance projection, LoRA) from `seed`: the same on every rank, and without
    touching the per-rank training streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
