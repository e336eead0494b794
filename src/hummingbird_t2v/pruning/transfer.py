"""Build a pruned student U-Net and initialise it from the teacher's weights through a layout.

Every student state-dict key gets a source: a teacher key (block keys through the layout, the rest by
name) or `None` for layers the teacher does not have (the guidance projection), which keep a fresh
initialisation. The student's state dict is then built *afresh* from those sources and loaded
strictly. The official loaders instead rename keys in place while walking the checkpoint, which
breaks when keys are not in module order (e.g. safetensors' sorted keys) and hides misses behind
`strict=False` (training-and-data.md §0.3, §8 item 17).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from hummingbird_t2v.checkpoints.unet_keys import (
    check_state_dict_fits,
    expected_unet_shapes,
)
from hummingbird_t2v.models.unet import UNet3D
from hummingbird_t2v.models.unet_blocks import Upsample
from hummingbird_t2v.models.unet_config import UNetConfig
from hummingbird_t2v.pruning.layouts import (
    LayoutError,
    PruneLayout,
    block_index,
    check_layout,
)

# Layers a student may have without a teacher counterpart; they keep their default initialisation.
FRESH_ROOTS = ("time_cond_proj",)


def student_key_sources(teacher: UNetConfig, layout: PruneLayout) -> dict[str, str | None]:
    """For every student key (state-dict order), the teacher key copied into it, or None (fresh init)."""
    check_layout(teacher, layout)
    student_config = layout.student_config(teacher)
    with torch.device("meta"):
        student = UNet3D(student_config)
    t_index, s_index = block_index(teacher), block_index(student_config)

    # Student block prefix -> teacher block prefix.
    blocks: dict[str, str] = {}
    upsample_layers: dict[str, str] = {}  # student "output_blocks.G.L." -> teacher prefix of that level's upsampler
    for level, (enc, dec) in enumerate(zip(layout.encoder, layout.decoder)):
        for slot, position in enumerate(enc):
            blocks[f"input_blocks.{s_index.encoder[level][slot]}."] = f"input_blocks.{t_index.encoder[level][position]}."
        if s_index.downsample[level] is not None:
            blocks[f"input_blocks.{s_index.downsample[level]}."] = f"input_blocks.{t_index.downsample[level]}."
        for slot, position in enumerate(dec):
            s_block = s_index.decoder[level][slot]
            blocks[f"output_blocks.{s_block}."] = f"output_blocks.{t_index.decoder[level][position]}."
            # The upsampler belongs to the level, not to the unit that happens to carry it: it always comes
            # from the teacher's last unit of the level, whichever teacher unit fills the student's last slot.
            for layer, module in enumerate(student.output_blocks[s_block]):
                if isinstance(module, Upsample):
                    upsample_layers[f"output_blocks.{s_block}.{layer}."] = (
                        f"output_blocks.{t_index.decoder[level][-1]}.{layer}."
                    )
    blocks["input_blocks.0."] = "input_blocks.0."

    teacher_shapes = expected_unet_shapes(teacher)
    sources: dict[str, str | None] = {}
    for key, tensor in student.state_dict().items():
        source = _source_of(key, blocks, upsample_layers)
        if source not in teacher_shapes:
            if key.split(".", 1)[0] in FRESH_ROOTS:
                sources[key] = None
                continue
            raise LayoutError(f"student weight {key} has no counterpart {source} in the teacher; the two U-Nets differ beyond block counts")
        if teacher_shapes[source] != tuple(tensor.shape):
            raise LayoutError(
                f"student weight {key} {tuple(tensor.shape)} cannot come from teacher {source} {teacher_shapes[source]}"
            )
        sources[key] = source
    return sources


def _source_of(key: str, blocks: dict[str, str], upsample_layers: dict[str, str]) -> str:
    parts = key.split(".")
    if parts[0] in ("input_blocks", "output_blocks"):
        layer_prefix = ".".join(parts[:3]) + "."
        if layer_prefix in upsample_layers:
            return upsample_layers[layer_prefix] + ".".join(parts[3:])
        block_prefix = ".".join(parts[:2]) + "."
        return blocks[block_prefix] + ".".join(parts[2:])
    return key


@dataclass
class PrunedStudent:
    unet: UNet3D
    sources: dict[str, str | None]  # student key -> teacher key (None: freshly initialised)

    @property
    def fresh_keys(self) -> list[str]:
        return [key for key, source in self.sources.items() if source is None]


def prune_unet(
    teacher_state: Mapping[str, Tensor],
    teacher_config: UNetConfig,
    layout: PruneLayout,
    *,
    seed: int = 0,
    share_storage: bool = False,
) -> PrunedStudent:
    """The student U-Net of `layout`, every copied tensor equal to its teacher source.

    The student lives on the teacher tensors' device and dtype. Copied tensors are cloned, so that
    training the student never changes a teacher that is still in use; `share_storage=True` skips the
    copy (saves memory when the teacher is discarded right after, as `hummingbird prune` does).
    Fresh layers are initialised as their module's `reset_parameters` does, from `seed`.
    """
    check_state_dict_fits(expected_unet_shapes(teacher_config), teacher_state, component="teacher U-Net")
    sources = student_key_sources(teacher_config, layout)
    reference = next(iter(teacher_state.values()))
    with torch.device("meta"):
        student = UNet3D(layout.student_config(teacher_config))
    state: dict[str, Tensor] = {}
    for key, source in sources.items():
        if source is None:
            state[key] = _fresh_parameter(student, key, seed).to(device=reference.device, dtype=reference.dtype)
        else:
            tensor = teacher_state[source].detach()
            state[key] = tensor if share_storage else tensor.clone()
    student.load_state_dict(state, strict=True, assign=True)
    return PrunedStudent(student.eval(), sources)


def _fresh_parameter(model: torch.nn.Module, key: str, seed: int) -> Tensor:
    """A freshly initialised value for parameter `key` of a (meta) model: its owner's own initialisation."""
    owner_name, _, attribute = key.rpartition(".")
    owner = copy.deepcopy(model.get_submodule(owner_name)).to_empty(device="cpu")
    if not hasattr(owner, "reset_parameters"):
        raise LayoutError(f"cannot initialise {key}: {type(owner).__name__} has no reset_parameters")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        owner.reset_parameters()
    return getattr(owner, attribute).detach()
