"""A human-readable account of a weights file or model folder (`hummingbird info`)."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

from hummingbird_t2v.checkpoints.components import split_components
from hummingbird_t2v.checkpoints.folder import (
    CONFIG_NAME,
    INDEX_NAME,
    WEIGHTS_NAME,
    read_json,
)
from hummingbird_t2v.checkpoints.formats import read_checkpoint
from hummingbird_t2v.checkpoints.unet_keys import infer_unet_config, match_unet_preset
from hummingbird_t2v.errors import CheckpointError

COMPONENTS = ("unet", "vae", "text_encoder")


@dataclass
class ComponentSummary:
    name: str
    parameters: int
    tensors: int
    dtypes: dict[str, int]


@dataclass
class CheckpointSummary:
    path: Path
    format: str
    components: list[ComponentSummary]
    unet_preset: str | None = None
    unet_structure: str = ""
    sampler: str = ""
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.path}", f"  format: {self.format}"]
        for component in self.components:
            dtypes = ", ".join(f"{dtype} x{count}" for dtype, count in sorted(component.dtypes.items()))
            lines.append(f"  {component.name}: {component.parameters:,} parameters in {component.tensors} tensors ({dtypes})")
        lines.append(f"  U-Net preset: {self.unet_preset or 'none matches exactly'}")
        if self.unet_structure:
            lines.append(f"  U-Net structure: {self.unet_structure}")
        if self.sampler:
            lines.append(f"  sampler: {self.sampler}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


def _component_summary(name: str, shapes_and_dtypes: list[tuple[tuple[int, ...], str]]) -> ComponentSummary:
    return ComponentSummary(
        name=name,
        parameters=sum(math.prod(shape) for shape, _ in shapes_and_dtypes),
        tensors=len(shapes_and_dtypes),
        dtypes=dict(Counter(dtype for _, dtype in shapes_and_dtypes)),
    )


def _describe_structure(unet_shapes: dict[str, Any]) -> tuple[str, str]:
    """(structure description, sampler it implies); a U-Net we cannot read is reported, not fatal."""
    try:
        config = infer_unet_config(unet_shapes)
    except (CheckpointError, ValueError) as error:
        return f"not recognised ({error})", ""
    structure = (
        f"{config.num_res_blocks} ResBlock(s) per level, widths {[config.model_channels * m for m in config.channel_mult]}, "
        f"middle block {'yes' if config.use_middle_block else 'no'}, "
        f"guidance projection {'yes' if config.time_cond_proj_dim else 'no'}"
    )
    sampler = "consistency (distilled student, 4/8 steps)" if config.time_cond_proj_dim else "DDIM + classifier-free guidance (teacher)"
    return structure, sampler


def summarize(path: Path) -> CheckpointSummary:
    path = Path(path)
    if path.is_dir():
        return _summarize_folder(path)
    checkpoint = read_checkpoint(path)
    parts = split_components(checkpoint.state_dict, dtype=None)
    components = [
        _component_summary(name, [(tuple(t.shape), str(t.dtype).removeprefix("torch.")) for t in getattr(parts, name).values()])
        for name in COMPONENTS
        if getattr(parts, name)
    ]
    summary = CheckpointSummary(path=path, format=checkpoint.format, components=components)
    if parts.unet:
        summary.unet_preset = match_unet_preset(parts.unet)
        summary.unet_structure, summary.sampler = _describe_structure(parts.unet)
    else:
        summary.notes.append("no U-Net weights found (expected model.diffusion_model.* or bare U-Net names)")
    for key, value in checkpoint.metadata.items():
        summary.notes.append(f"{key} = {value}")
    if parts.unrecognised:
        summary.notes.append(f"{len(parts.unrecognised)} entries belong to no component, e.g. {parts.unrecognised[0]}")
    return summary


def _summarize_folder(folder: Path) -> CheckpointSummary:
    index = read_json(folder / INDEX_NAME)
    components = []
    unet_shapes: dict[str, Any] = {}
    optional = [name for name in index.get("components", {}) if name not in COMPONENTS]  # e.g. a caption prior
    for name in (*COMPONENTS, *optional):
        weights = folder / name / WEIGHTS_NAME
        if not (folder / name / CONFIG_NAME).is_file() or not weights.is_file():
            raise CheckpointError(f"{folder} lacks {name}/{CONFIG_NAME} or {name}/{WEIGHTS_NAME}; re-create it with `hummingbird convert`")
        entries = []
        with safe_open(str(weights), framework="pt") as handle:
            for key in handle.keys():
                tensor_slice = handle.get_slice(key)
                shape = tuple(tensor_slice.get_shape())
                entries.append((shape, tensor_slice.get_dtype().lower()))
                if name == "unet":
                    unet_shapes[key] = shape
        components.append(_component_summary(name, entries))
    summary = CheckpointSummary(path=folder, format="model folder", components=components)
    summary.unet_preset = match_unet_preset(unet_shapes)
    summary.unet_structure, _ = _describe_structure(unet_shapes)
    summary.sampler = f"{index.get('sampler')} (from {INDEX_NAME})"
    return summary
