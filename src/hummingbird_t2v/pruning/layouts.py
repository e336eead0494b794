"""Pruning layouts: which teacher block fills each slot of the student U-Net.

A U-Net level has `n` encoder units (ResBlock [+ spatial + temporal transformer]) and `n + 1`
decoder units, because every decoder unit concatenates exactly one skip feature: the `n` encoder
outputs of its level plus the feature that entered the level (the previous level's downsampler, or
the input conv at level 0). A layout lists, per level, the teacher units that fill the student's
encoder slots and decoder slots, in the student's order, by their *position within the level*
(0-based, decoder positions in execution order). Sources come from the same level, whose resolution
and attention configuration they were trained for. Downsamplers, upsamplers and everything outside the
blocks are copied by position / name (docs/pruning.md).

The paper's fixed map (training-and-data.md §0.3) is the layout with encoder `[0]` at every level and
decoder `[0, 2]`, `[0, 2]`, `[1, 2]`, `[1, 2]` at levels 0..3: in global indices input 0→0, 1→1,
3→2, 4→3, 6→4, 7→5, 9→6, 10→7 and output 1→0, 2→1, 4→2, 5→3, 6→4, 8→5, 9→6, 11→7.

**Shape rule.** A teacher unit can fill a student slot only if its input channel count matches:
for an encoder unit the features entering it, for a decoder unit the features from below plus the
skip it concatenates. `check_layout` verifies this for every slot and names the teacher units that
would fit when it fails.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.models.unet_config import UNetConfig

# The guidance-scale projection of the released students (a 256-d w-embedding).
RELEASED_GUIDANCE_PROJECTION = 256

_PAPER_ENCODER = ((0,), (0,), (0,), (0,))
_PAPER_DECODER = ((0, 2), (0, 2), (1, 2), (1, 2))
PAPER_LAYOUT_NAMES = ("hb-0.9b", "hb-0.7b")

_LAYOUT_KEYS = ("name", "levels", "middle_block", "time_cond_proj_dim", "analysis")


class LayoutError(ConfigError):
    """A pruning layout that does not fit the teacher (counts, indices or the shape rule)."""


@dataclass(frozen=True)
class BlockIndex:
    """Global `input_blocks` / `output_blocks` indices of a U-Net structure, grouped by level (level 0 first)."""

    encoder: tuple[tuple[int, ...], ...]
    downsample: tuple[int | None, ...]  # the Downsample entry after each level (None for the last level)
    decoder: tuple[tuple[int, ...], ...]  # in execution order within each level


def block_index(config: UNetConfig) -> BlockIndex:
    counts = config.blocks_per_level
    last = len(counts) - 1
    encoder, downsample = [], []
    position = 1  # input_blocks.0 is the input conv
    for level, n in enumerate(counts):
        encoder.append(tuple(range(position, position + n)))
        position += n
        if level != last:
            downsample.append(position)
            position += 1
        else:
            downsample.append(None)
    decoder: list[tuple[int, ...]] = [()] * len(counts)
    position = 0
    for level in reversed(range(len(counts))):  # the decoder runs from the deepest level up
        decoder[level] = tuple(range(position, position + counts[level] + 1))
        position += counts[level] + 1
    return BlockIndex(tuple(encoder), tuple(downsample), tuple(decoder))


# --------------------------------------------------------------------------------------- channels


def _entering_channels(config: UNetConfig, level: int) -> int:
    """Width of the feature that enters `level`: the input conv's, or the previous level's (downsampled)."""
    return config.model_channels if level == 0 else config.level_widths[level - 1]


def encoder_input_channels(config: UNetConfig, level: int, position: int) -> int:
    """Channels entering encoder unit `position` of `level` (the first unit of a level may change width)."""
    return _entering_channels(config, level) if position == 0 else config.level_widths[level]


def decoder_input_parts(config: UNetConfig, level: int, position: int, units: int) -> tuple[int, int]:
    """(features from below, skip) channels of decoder unit `position` of a level with `units` decoder units.

    The first unit of a level receives the deeper level's output (or the middle block's at the
    deepest level); the skips of a level are popped in reverse: first its encoder outputs, last the
    feature that entered the level.
    """
    widths = config.level_widths
    below = widths[min(level + 1, len(widths) - 1)] if position == 0 else widths[level]
    skip = widths[level] if position < units - 1 else _entering_channels(config, level)
    return below, skip


# --------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class PruneLayout:
    """Per level, the teacher units (positions within the level) that fill the student's slots."""

    encoder: tuple[tuple[int, ...], ...]
    decoder: tuple[tuple[int, ...], ...]
    middle_block: bool = True
    # The student's guidance projection (freshly initialised: the teacher has none), or None.
    time_cond_proj_dim: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for field_name in ("encoder", "decoder"):
            value = getattr(self, field_name)
            try:
                levels = tuple(tuple(_index(i) for i in level) for level in value)
            except (TypeError, ValueError):
                raise LayoutError(
                    f"layout {field_name} must be one list of block positions per level, got {value!r}"
                ) from None
            object.__setattr__(self, field_name, levels)
        if len(self.encoder) != len(self.decoder):
            raise LayoutError(
                f"layout lists {len(self.encoder)} encoder levels but {len(self.decoder)} decoder levels"
            )
        for level, (enc, dec) in enumerate(zip(self.encoder, self.decoder)):
            if not enc:
                raise LayoutError(f"level {level} keeps no encoder block; every level needs at least one")
            if len(dec) != len(enc) + 1:
                raise LayoutError(
                    f"level {level} keeps {len(enc)} encoder block(s), so it needs {len(enc) + 1} decoder blocks "
                    f"(one per skip feature: the {len(enc)} encoder outputs and the feature entering the level), "
                    f"got {len(dec)}"
                )
        dim = self.time_cond_proj_dim
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise LayoutError(f"time_cond_proj_dim must be a positive integer or null, got {self.time_cond_proj_dim!r}")

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        return tuple(len(level) for level in self.encoder)

    def student_config(self, teacher: UNetConfig) -> UNetConfig:
        """The teacher's config with this layout's block counts, middle block and guidance projection."""
        return teacher.replace(
            num_res_blocks=self.blocks_per_level,
            use_middle_block=self.middle_block,
            time_cond_proj_dim=self.time_cond_proj_dim,
        )

    def replace(self, **changes: Any) -> PruneLayout:
        return dataclasses.replace(self, **changes)

    def global_map(self, teacher: UNetConfig) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(input_blocks, output_blocks) pairs (teacher index, student index) in student order, as the spec
        writes the map; the input conv and the downsamplers are included."""
        t, s = block_index(teacher), block_index(self.student_config(teacher))
        inputs = [(0, 0)]
        outputs: list[tuple[int, int]] = []
        for level, (enc, dec) in enumerate(zip(self.encoder, self.decoder)):
            inputs += [(t.encoder[level][position], s.encoder[level][slot]) for slot, position in enumerate(enc)]
            if t.downsample[level] is not None:
                inputs.append((t.downsample[level], s.downsample[level]))
            outputs += [(t.decoder[level][position], s.decoder[level][slot]) for slot, position in enumerate(dec)]
        return sorted(inputs, key=lambda pair: pair[1]), sorted(outputs, key=lambda pair: pair[1])

    def describe(self, teacher: UNetConfig) -> str:
        """One line in the spec's notation, e.g. 'input 0→0, 1→1, 3→2 ...; output 1→0 ...; middle kept'."""
        inputs, outputs = self.global_map(teacher)
        fmt = lambda pairs: ", ".join(f"{a}→{b}" for a, b in pairs)
        middle = "kept" if self.middle_block else "dropped"
        projection = f"guidance projection {self.time_cond_proj_dim} (fresh)" if self.time_cond_proj_dim else "no guidance projection"
        return f"input {fmt(inputs)}; output {fmt(outputs)}; middle block {middle}; {projection}"

    # ------------------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.name:
            data["name"] = self.name
        data["levels"] = [{"encoder": list(e), "decoder": list(d)} for e, d in zip(self.encoder, self.decoder)]
        data["middle_block"] = self.middle_block
        data["time_cond_proj_dim"] = self.time_cond_proj_dim
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "layout") -> PruneLayout:
        if not isinstance(data, dict):
            raise LayoutError(f"{source}: a layout is a mapping with 'levels' (and 'middle_block', 'time_cond_proj_dim')")
        unknown = sorted(set(data) - set(_LAYOUT_KEYS))
        if unknown:
            raise LayoutError(f"{source}: unknown key(s) {unknown}; a layout has {list(_LAYOUT_KEYS)}")
        levels = data.get("levels")
        if not isinstance(levels, list) or not levels:
            raise LayoutError(f"{source}: 'levels' must be a list with one {{encoder: [...], decoder: [...]}} per level")
        encoder, decoder = [], []
        for level, entry in enumerate(levels):
            if not isinstance(entry, dict) or set(entry) != {"encoder", "decoder"}:
                raise LayoutError(f"{source}: level {level} must be a mapping with exactly 'encoder' and 'decoder' lists")
            if not isinstance(entry["encoder"], list) or not isinstance(entry["decoder"], list):
                raise LayoutError(f"{source}: level {level}: 'encoder' and 'decoder' must be lists of block positions")
            encoder.append(entry["encoder"])
            decoder.append(entry["decoder"])
        middle = data.get("middle_block", True)
        if not isinstance(middle, bool):
            raise LayoutError(f"{source}: 'middle_block' must be true or false, got {middle!r}")
        return cls(
            encoder=tuple(encoder),
            decoder=tuple(decoder),
            middle_block=middle,
            time_cond_proj_dim=data.get("time_cond_proj_dim"),
            name=data.get("name"),
        )


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


def paper_layout(name: str, teacher: UNetConfig | None = None) -> PruneLayout:
    """The released students' map: 'hb-0.9b' keeps the middle block, 'hb-0.7b' drops it.

    Defined for the VideoCrafter2 structure (4 levels, 2 blocks per level); `teacher` is checked if given.
    """
    if name not in PAPER_LAYOUT_NAMES:
        raise LayoutError(f"unknown layout {name!r}; use one of {list(PAPER_LAYOUT_NAMES)} or a LAYOUT.yaml file")
    if teacher is not None and (len(teacher.channel_mult) != 4 or teacher.blocks_per_level != (2, 2, 2, 2)):
        raise LayoutError(
            f"the {name} map is defined for a teacher with 4 levels of 2 blocks (VideoCrafter2); this teacher has "
            f"{list(teacher.blocks_per_level)} blocks per level; write a LAYOUT.yaml or use `hummingbird prune --analyze`"
        )
    return PruneLayout(
        encoder=_PAPER_ENCODER,
        decoder=_PAPER_DECODER,
        middle_block=name == "hb-0.9b",
        time_cond_proj_dim=RELEASED_GUIDANCE_PROJECTION,
        name=name,
    )


def full_layout(teacher: UNetConfig) -> PruneLayout:
    """The identity layout: every teacher block in its own place (the student equals the teacher)."""
    return PruneLayout(
        encoder=tuple(tuple(range(n)) for n in teacher.blocks_per_level),
        decoder=tuple(tuple(range(n + 1)) for n in teacher.blocks_per_level),
        middle_block=teacher.use_middle_block,
        time_cond_proj_dim=teacher.time_cond_proj_dim,
    )


def load_layout(spec: str | Path, teacher: UNetConfig | None = None) -> PruneLayout:
    """A paper layout name ('hb-0.9b', 'hb-0.7b') or a LAYOUT.yaml file."""
    if str(spec) in PAPER_LAYOUT_NAMES:
        return paper_layout(str(spec), teacher)
    path = Path(spec)
    if not path.is_file():
        raise LayoutError(f"layout {str(spec)!r} is neither {' nor '.join(PAPER_LAYOUT_NAMES)} nor an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise LayoutError(f"{path} is not valid YAML ({str(error).splitlines()[0]})") from None
    return PruneLayout.from_dict(data, source=str(path))


def layout_yaml(layout: PruneLayout, teacher: UNetConfig | None = None, analysis: dict[str, Any] | None = None) -> str:
    """YAML text that `load_layout` reads back; `analysis` is informational (ignored when loading)."""
    header = "# hummingbird prune layout: per level, the teacher blocks (positions within the level) that fill\n"
    header += "# the student's encoder and decoder slots, in order (docs/pruning.md).\n"
    if teacher is not None:
        header += f"# {layout.describe(teacher)}\n"
    data = layout.to_dict()
    if analysis is not None:
        data["analysis"] = analysis
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)


# --------------------------------------------------------------------------------------- checks


def check_layout(teacher: UNetConfig, layout: PruneLayout) -> None:
    """Raise LayoutError unless every slot of `layout` can be filled from `teacher` (see the module doc)."""
    counts = teacher.blocks_per_level
    if len(layout.encoder) != len(counts):
        raise LayoutError(f"the layout has {len(layout.encoder)} levels but the teacher U-Net has {len(counts)}")
    if layout.middle_block and not teacher.use_middle_block:
        raise LayoutError("the layout keeps the middle block but the teacher has none; set middle_block: false")
    problems: list[str] = []
    student = layout.student_config(teacher)
    t_index, s_index = block_index(teacher), block_index(student)
    for level, (enc, dec) in enumerate(zip(layout.encoder, layout.decoder)):
        n_t = counts[level]
        for slot, position in enumerate(enc):
            if position >= n_t:
                problems.append(f"level {level} encoder: position {position} does not exist (the teacher has {n_t} blocks there, 0..{n_t - 1})")
                continue
            need = encoder_input_channels(student, level, slot)
            have = encoder_input_channels(teacher, level, position)
            if need != have:
                fits = [t_index.encoder[level][p] for p in range(n_t) if encoder_input_channels(teacher, level, p) == need]
                problems.append(
                    f"student input block {s_index.encoder[level][slot]} (level {level}, encoder slot {slot}) receives "
                    f"{need} channels but teacher input block {t_index.encoder[level][position]} expects {have}; "
                    f"teacher block(s) that fit: {fits or 'none'}"
                )
        for slot, position in enumerate(dec):
            if position > n_t:
                problems.append(f"level {level} decoder: position {position} does not exist (the teacher has {n_t + 1} blocks there, 0..{n_t})")
                continue
            below, skip = decoder_input_parts(student, level, slot, len(dec))
            t_below, t_skip = decoder_input_parts(teacher, level, position, n_t + 1)
            if below + skip != t_below + t_skip:
                fits = [
                    t_index.decoder[level][p]
                    for p in range(n_t + 1)
                    if sum(decoder_input_parts(teacher, level, p, n_t + 1)) == below + skip
                ]
                problems.append(
                    f"student output block {s_index.decoder[level][slot]} (level {level}, decoder slot {slot}) takes "
                    f"{below} + {skip} = {below + skip} input channels (features from below + skip) but teacher output "
                    f"block {t_index.decoder[level][position]} takes {t_below} + {t_skip} = {t_below + t_skip}; "
                    f"teacher block(s) that fit: {fits or 'none'}"
                )
    if problems:
        shown = "; ".join(problems[:3]) + ("; ..." if len(problems) > 3 else "")
        raise LayoutError(
            f"the layout does not fit the teacher ({len(problems)} problem(s)): {shown}. A teacher block can fill a "
            "slot only if its input channels match (docs/pruning.md, 'Shape rule')"
        )
