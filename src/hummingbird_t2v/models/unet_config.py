"""Configuration of the 3D U-Net shared by the VideoCrafter2 teacher and the Hummingbird students.

One dataclass describes all three released networks; they differ only in `num_res_blocks`,
`use_middle_block` and `time_cond_proj_dim` (see docs/models.md, "U-Net"). `num_res_blocks` may also
differ per level (a tuple), which pruned layouts other than the released ones need (docs/pruning.md).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields

from hummingbird_t2v.errors import ConfigError

# GroupNorm always uses 32 groups in this architecture, so every normalised width must divide by 32.
NORM_GROUPS = 32


@dataclass(frozen=True)
class UNetConfig:
    """Sizes and switches of `UNet3D`.

    Field names follow the official constructor arguments where one exists.
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    # Encoder ResBlock units per level: one int for every level, or one per level (level 0 first).
    # The decoder has one unit more per level, so that every skip feature is consumed exactly once.
    num_res_blocks: int | tuple[int, ...] = 2
    # Downsampling factors (1, 2, 4, ...) of the levels that get spatial + temporal transformers.
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    # Width of one attention head; a transformer on `ch` channels has ch // num_head_channels heads.
    num_head_channels: int = 64
    context_dim: int = 1024
    # The 0.7B student drops the middle block (its encoder output goes straight to the decoder).
    use_middle_block: bool = True
    # Width of the guidance-scale embedding the students add to the timestep sinusoid (256), or None.
    time_cond_proj_dim: int | None = None
    fps_cond: bool = True
    # Not in VideoCrafter2 (whose frames are ordered only by the temporal convs): an MLP of each
    # frame's index sinusoid added to that frame's embedding, so every block knows which frame it
    # is drawing. Zero-initialised, so adding it to a trained U-Net changes nothing until trained
    # (`add_frame_position_embedding`). The toy model's option for learning motion direction.
    frame_position_embedding: bool = False
    # Not in VideoCrafter2 either: an MLP of [frame index sinusoid, mean of the caption tokens] added
    # to each frame's embedding, so that what a frame draws can depend on the frame *and* the caption
    # together (e.g. "moving right" in frame 7: right of centre), which the additive embeddings and
    # the per-frame cross-attention make hard. Zero-initialised like the above
    # (`add_frame_caption_embedding`).
    frame_caption_embedding: bool = False
    # Not in VideoCrafter2: a zero-initialised 3x3x3 conv after every ResBlock's temporal convs
    # (`unet_blocks.SpatiotemporalConv`): filters oriented in space-time, the local form of an
    # object moving one way, in one layer instead of assembled from separate spatial and temporal
    # ones (`add_spatiotemporal_convs`).
    spatiotemporal_conv: bool = False
    # fps used when the caller passes none (the official forward's default).
    default_fps: int = 16
    # Dropout inside every ResBlock (before its second conv).
    dropout: float = 0.0
    # Dropout of stages 2-4 of every TemporalConvBlock; hard-coded to 0.1 in the official code.
    temporal_conv_dropout: float = 0.1
    # Transformer blocks per spatial / temporal transformer (1 in every released model).
    transformer_depth: int = 1
    temporal_transformer_depth: int = 1
    # The extra temporal transformer right after the input conv ("addition_attention").
    use_init_attn: bool = True
    # init_attn has a fixed head count (8 heads of num_head_channels, i.e. 512 wide at full size).
    init_attn_heads: int = 8

    def __post_init__(self) -> None:
        # Lists arrive from JSON; store tuples so the config stays hashable and comparable.
        for name in ("channel_mult", "attention_resolutions"):
            value = getattr(self, name)
            try:
                object.__setattr__(self, name, tuple(int(v) for v in value))
            except (TypeError, ValueError):
                raise ConfigError(f"UNetConfig.{name} must be a list of integers, got {value!r}") from None
        self._normalise_num_res_blocks()
        self._validate()

    def _normalise_num_res_blocks(self) -> None:
        value = self.num_res_blocks
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise ConfigError(f"UNetConfig.num_res_blocks must be positive integers, got {value!r}")
            if len(value) != len(self.channel_mult):
                raise ConfigError(
                    f"UNetConfig.num_res_blocks lists {len(value)} levels but channel_mult has "
                    f"{len(self.channel_mult)}; give one count per level or a single int"
                )
            # A uniform tuple is stored as one int, so that it equals (and saves like) the released presets.
            value = value[0] if len(set(value)) == 1 else tuple(value)
            object.__setattr__(self, "num_res_blocks", value)

    def _validate(self) -> None:
        positive = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "model_channels": self.model_channels,
            "num_head_channels": self.num_head_channels,
            "context_dim": self.context_dim,
            "transformer_depth": self.transformer_depth,
            "temporal_transformer_depth": self.temporal_transformer_depth,
            "init_attn_heads": self.init_attn_heads,
        }
        if not isinstance(self.num_res_blocks, tuple):
            positive["num_res_blocks"] = self.num_res_blocks
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"UNetConfig.{name} must be a positive integer, got {value!r}")
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ConfigError(
                f"UNetConfig.channel_mult must be a non-empty list of positive ints, got {self.channel_mult}"
            )
        for width in self.level_widths:
            if width % NORM_GROUPS:
                raise ConfigError(
                    f"UNetConfig: level width {width} (model_channels x channel_mult) is not divisible by "
                    f"{NORM_GROUPS}, which GroupNorm needs; choose model_channels a multiple of {NORM_GROUPS}"
                )
            if self.attention_heads(width) < 1:
                raise ConfigError(
                    f"UNetConfig.num_head_channels={self.num_head_channels} is wider than the {width}-channel "
                    "level; choose num_head_channels <= model_channels"
                )
        if self.time_cond_proj_dim is not None and (
            not isinstance(self.time_cond_proj_dim, int) or self.time_cond_proj_dim < 1
        ):
            raise ConfigError(
                f"UNetConfig.time_cond_proj_dim must be a positive integer or None, got {self.time_cond_proj_dim!r}"
            )
        for name in ("dropout", "temporal_conv_dropout"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ConfigError(f"UNetConfig.{name} must be in [0, 1), got {p}")

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def blocks_per_level(self) -> tuple[int, ...]:
        """Encoder ResBlock units of each level (level 0 first); the decoder has one more per level."""
        if isinstance(self.num_res_blocks, tuple):
            return self.num_res_blocks
        return (self.num_res_blocks,) * len(self.channel_mult)

    @property
    def level_widths(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    def attention_heads(self, width: int) -> int:
        return width // self.num_head_channels

    def to_dict(self) -> dict:
        """JSON-serialisable dict (tuples become lists); inverse of `from_dict`."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        """Build from a dict such as a saved config.json; unknown keys are an error, missing ones take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown U-Net config key(s) {unknown}; valid keys are {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> UNetConfig:
        return dataclasses.replace(self, **changes)


_TEACHER = UNetConfig()
_STUDENT_09B = UNetConfig(num_res_blocks=1, time_cond_proj_dim=256)
# The tiny golden models keep every structural flag and shrink only the widths
# (shared/reference/golden/tiny_configs.json).
_TINY_SIZES = dict(model_channels=32, channel_mult=(1, 1, 2, 2), num_head_channels=8, context_dim=32)

UNET_PRESETS: dict[str, UNetConfig] = {
    "vc2": _TEACHER,
    "hb-0.9b": _STUDENT_09B,
    "hb-0.7b": _STUDENT_09B.replace(use_middle_block=False),
    "tiny-vc2": _TEACHER.replace(**_TINY_SIZES),
    "tiny-hb-0.9b": _STUDENT_09B.replace(**_TINY_SIZES),
    "tiny-hb-0.7b": _STUDENT_09B.replace(use_middle_block=False, **_TINY_SIZES),
}


def get_unet_preset(name: str) -> UNetConfig:
    try:
        return UNET_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown U-Net preset {name!r}; valid presets are {sorted(UNET_PRESETS)}") from None
