"""Scene specifications: everything needed to render a toy clip, drawn from a seeded generator.

A scene is plain data (named attributes plus the continuous parameters behind them), so a clip
can be re-rendered, inspected, and its ground truth read off without looking at pixels.
Coordinates: the frame's short side spans [-1, 1], x points right and y points down; time
tau runs from 0 (first frame) to 1 (last frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hummingbird_t2v.errors import ConfigError
from hummingbird_t2v.toyworld.vocabulary import (
    BACKGROUNDS,
    CAMERA_WORDS,
    CAMERAS,
    COLOR_RGB,
    COLORS,
    DEGRADATIONS,
    MIN_COLOR_DISTANCE,
    MOTION_DIRECTIONS,
    MOTION_WORDS,
    MOTIONS,
    PAN_DIRECTIONS,
    ROTATION_INVARIANT_SHAPES,
    SHAPES,
    SIZE_RADIUS,
    SIZES,
    TEXTURED_BACKGROUNDS,
)

__all__ = [
    "BackgroundSpec",
    "CameraSpec",
    "ObjectSpec",
    "SceneSpec",
    "SceneVocabulary",
    "VOCABULARY_PRESETS",
    "resolve_vocabulary",
    "background_rgbs",
    "describe_vocabulary",
    "sample_scene",
    "texture_shade",
]

# Objects stay inside this half-extent of the frame (a small margin from the border).
_FRAME_LIMIT = 0.95
# Straight and bouncing motions shorter than this (frame units; the frame is 2 wide) are hard to
# see, so scenes that cannot fit a longer path are redrawn.
_MIN_TRAVEL = 0.4
_MAX_DRAWS = 50
# Two objects share the frame side by side, each in its own half, at this fraction of the size.
_TWO_OBJECT_SCALE = 0.75


@dataclass(frozen=True)
class ObjectSpec:
    shape: str
    color: str
    size: str  # the size class at the first frame
    motion: str
    radius: float  # at the first frame
    center: tuple[float, float]  # middle of the path (for bouncing: the mid height)
    travel: float = 0.0  # path length for straight motions, jump height for bouncing
    spin: float = 0.0  # radians turned over the clip (rotating)
    growth: float = 1.0  # radius(last) / radius(first) (growing > 1, shrinking < 1)
    bounces: float = 2.0  # number of hops over the clip (bouncing)


@dataclass(frozen=True)
class BackgroundSpec:
    kind: str
    color: str
    color2: str = ""  # the far end of a gradient
    angle: float = 0.0  # gradient or stripe direction, radians
    cell: float = 0.3  # texture period, in frame units


@dataclass(frozen=True)
class CameraSpec:
    kind: str
    travel: float = 0.0  # pan distance over the clip, in frame units
    zoom: float = 1.0  # zoom factor reached at the last frame (dolly zoom: of the background)


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]
    background: BackgroundSpec
    camera: CameraSpec


@dataclass(frozen=True)
class SceneVocabulary:
    """Which attribute values scenes may use (defaults: all), and how often the rarer ones occur."""

    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = COLORS
    sizes: tuple[str, ...] = SIZES
    motions: tuple[str, ...] = MOTIONS
    backgrounds: tuple[str, ...] = BACKGROUNDS
    cameras: tuple[str, ...] = CAMERAS
    degradations: tuple[str, ...] = DEGRADATIONS
    two_object_fraction: float = 0.25
    camera_motion_fraction: float = 0.25  # share of clips whose camera is not still

    def __post_init__(self) -> None:
        known = {
            "shapes": SHAPES,
            "colors": COLORS,
            "sizes": SIZES,
            "motions": MOTIONS,
            "backgrounds": BACKGROUNDS,
            "cameras": CAMERAS,
            "degradations": DEGRADATIONS,
        }
        for name, allowed in known.items():
            values = tuple(getattr(self, name))
            object.__setattr__(self, name, values)
            unknown = [value for value in values if value not in allowed]
            if unknown:
                raise ConfigError(f"unknown toy-world {name} {unknown}; choose from {list(allowed)}")
            if not values and name != "degradations":
                raise ConfigError(f"the toy world needs at least one of the {name}: {list(allowed)}")
        for name in ("two_object_fraction", "camera_motion_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must lie in [0, 1], got {value}")
        if len(self.colors) < 2:
            raise ConfigError("the toy world needs at least two colors (object and background)")
        if all(shape in ROTATION_INVARIANT_SHAPES for shape in self.shapes) and self.motions == ("rotating",):
            raise ConfigError("rotating is invisible on circles and rings: allow another shape or motion")
        if "still" not in self.cameras and not TEXTURED_BACKGROUNDS & set(self.backgrounds):
            raise ConfigError(
                "camera moves need a textured background: allow checkerboard, stripes or dots, or the still camera"
            )


# Named vocabularies. "core" is the world the built-in toy model is trained to follow: one
# object of four clearly different shapes, eight colours, medium or large, moving in one of the
# four directions or standing still, on a solid background with a still camera. It is small enough
# for a 2-core CPU to teach a diffusion model in hours; "full" is everything the toy world renders.
VOCABULARY_PRESETS: dict[str, SceneVocabulary] = {
    "full": SceneVocabulary(),
    "core": SceneVocabulary(
        shapes=("circle", "square", "triangle", "star"),
        colors=("red", "orange", "yellow", "green", "blue", "purple", "white", "black"),
        sizes=("medium", "large"),
        motions=("still", "left", "right", "up", "down"),
        backgrounds=("solid",),
        cameras=("still",),
        two_object_fraction=0.0,
        camera_motion_fraction=0.0,
    ),
}


def resolve_vocabulary(value: SceneVocabulary | str | dict | None) -> SceneVocabulary:
    """A SceneVocabulary from a preset name ("core", "full"), a dict of its fields, or itself."""
    if value is None:
        return SceneVocabulary()
    if isinstance(value, SceneVocabulary):
        return value
    if isinstance(value, str):
        if value not in VOCABULARY_PRESETS:
            raise ConfigError(f"unknown toy vocabulary {value!r}; choose one of {', '.join(VOCABULARY_PRESETS)} or give its fields")
        return VOCABULARY_PRESETS[value]
    if isinstance(value, dict):
        try:
            return SceneVocabulary(**value)
        except TypeError as error:
            raise ConfigError(f"toy vocabulary has an unknown field ({error})") from None
    raise ConfigError(f"a toy vocabulary is a preset name or a mapping of its fields, got {type(value).__name__}")


def describe_vocabulary(vocabulary: SceneVocabulary | str | None = None) -> str:
    """What prompts of a vocabulary (default: the whole toy world) talk about, for people."""
    vocab = resolve_vocabulary(vocabulary)
    shape, motion = vocab.shapes[0], next((m for m in vocab.motions if m != "still"), vocab.motions[0])
    color = vocab.colors[0]
    backdrop = "blue" if "blue" in vocab.colors and color != "blue" else next(c for c in vocab.colors[::-1] if c != color)
    lines = [
        "Toy-world prompts describe " + ("one or two flat shapes" if vocab.two_object_fraction > 0 else "one flat shape")
        + " on a background, e.g.",
        f'  "a {color} {shape} {MOTION_WORDS[motion][0]} on a {backdrop} background"',
        "shapes:      " + ", ".join(vocab.shapes),
        "colors:      " + ", ".join(vocab.colors),
        "sizes:       " + ", ".join("(medium: no word)" if size == "medium" else size for size in vocab.sizes),
        "motions:     " + ", ".join(MOTION_WORDS[m][0] for m in vocab.motions),
        "backgrounds: " + ", ".join(vocab.backgrounds),
        "camera:      " + ", ".join(
            "still (no words)" if camera == "still" else CAMERA_WORDS[camera][0].lstrip(", ") for camera in vocab.cameras
        ),
        "Paraphrases such as 'crimson disc drifting left' are understood as well.",
    ]
    return "\n".join(lines)


def texture_shade(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    """The second colour of a textured background: a darker version of a light colour, a
    lighter version of a dark one. The contrast is mild so the texture shows camera motion
    without competing with the objects."""
    red, green, blue = rgb
    if 0.299 * red + 0.587 * green + 0.114 * blue > 100:
        return (red * 0.72, green * 0.72, blue * 0.72)
    return (red + (255 - red) * 0.3, green + (255 - green) * 0.3, blue + (255 - blue) * 0.3)


def background_rgbs(background: BackgroundSpec) -> list[tuple[float, float, float]]:
    """Every colour the background shows (objects must stand out against all of them)."""
    first = COLOR_RGB[background.color]
    if background.kind == "gradient":
        return [first, COLOR_RGB[background.color2]]
    if background.kind in TEXTURED_BACKGROUNDS:
        return [first, texture_shade(first)]
    return [first]


def _choice(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _sample_camera(rng: np.random.Generator, vocab: SceneVocabulary) -> CameraSpec:
    moving = [camera for camera in vocab.cameras if camera != "still"]
    textures = [kind for kind in vocab.backgrounds if kind in TEXTURED_BACKGROUNDS]
    # (SceneVocabulary guarantees "still" is allowed whenever a moving camera is impossible.)
    if not moving or not textures or ("still" in vocab.cameras and rng.random() >= vocab.camera_motion_fraction):
        return CameraSpec("still")
    kind = _choice(rng, moving)
    if kind.startswith("pan_"):
        return CameraSpec(kind, travel=float(rng.uniform(0.4, 0.7)))
    zoom = float(rng.uniform(1.4, 1.8))
    if kind == "zoom_out" or (kind == "dolly_zoom" and rng.random() < 0.5):
        zoom = 1.0 / zoom
    return CameraSpec(kind, zoom=zoom)


def _sample_background(rng: np.random.Generator, vocab: SceneVocabulary, camera: CameraSpec) -> BackgroundSpec:
    kinds = list(vocab.backgrounds)
    if camera.kind != "still":
        kinds = [kind for kind in kinds if kind in TEXTURED_BACKGROUNDS]
    kind = _choice(rng, kinds)
    color = _choice(rng, vocab.colors)
    if kind == "gradient":
        others = [c for c in vocab.colors if c != color]
        return BackgroundSpec(kind, color, _choice(rng, others), angle=float(rng.choice([0.0, 0.5, 1.0]) * math.pi / 2))
    if kind == "stripes":
        return BackgroundSpec(
            kind, color, angle=float(rng.choice([0.25, 0.5, 0.75, 1.0]) * math.pi), cell=float(rng.uniform(0.22, 0.35))
        )
    return BackgroundSpec(kind, color, cell=float(rng.uniform(0.3, 0.45)))


def _path_range(low: float, high: float, radius: float, extent: float, rng: np.random.Generator) -> tuple[float, float]:
    """Pick the centre of a path of half-length `extent` (along one axis) within [low, high] for
    an object of `radius`; shrink the path if it does not fit. Returns (centre, usable extent)."""
    room = max(0.0, (high - low) / 2 - radius)
    extent = min(extent, room)
    middle = (low + high) / 2
    slack = room - extent
    return middle + float(rng.uniform(-slack, slack)), extent


def _sample_object(
    rng: np.random.Generator,
    vocab: SceneVocabulary,
    color: str,
    box: tuple[float, float, float, float],
    scale: float,
) -> ObjectSpec:
    shape = _choice(rng, vocab.shapes)
    motions = [m for m in vocab.motions if not (m == "rotating" and shape in ROTATION_INVARIANT_SHAPES)]
    motion = _choice(rng, motions)
    sizes = list(vocab.sizes)
    if motion == "growing":
        sizes = [s for s in sizes if s != "large"] or sizes
    elif motion == "shrinking":
        sizes = [s for s in sizes if s != "small"] or sizes
    size = _choice(rng, sizes)
    radius = SIZE_RADIUS[size] * scale * float(rng.uniform(0.92, 1.08))

    growth = 1.0
    if motion == "growing":
        growth = float(rng.uniform(1.7, 2.2))
    elif motion == "shrinking":
        growth = 1.0 / float(rng.uniform(1.7, 2.2))
    largest = radius * max(1.0, growth)

    direction = MOTION_DIRECTIONS.get(motion, (0.0, 0.0))
    travel = 0.0
    if motion in MOTION_DIRECTIONS:
        travel = float(rng.uniform(0.6, 1.0))
    elif motion == "bouncing":
        travel = float(rng.uniform(0.4, 0.6))
        direction = (0.0, 1.0)
    x_low, x_high, y_low, y_high = box
    center_x, extent_x = _path_range(x_low, x_high, largest, abs(direction[0]) * travel / 2, rng)
    center_y, extent_y = _path_range(y_low, y_high, largest, abs(direction[1]) * travel / 2, rng)
    # Keep the direction exact: shorten the whole path to what fits along both axes.
    if motion in MOTION_DIRECTIONS or motion == "bouncing":
        limits = [2 * extent / abs(d) for extent, d in ((extent_x, direction[0]), (extent_y, direction[1])) if d]
        travel = min([travel, *limits])
    spin = float(rng.uniform(0.6, 1.2) * math.pi * rng.choice([-1.0, 1.0])) if motion == "rotating" else 0.0
    return ObjectSpec(
        shape=shape,
        color=color,
        size=size,
        motion=motion,
        radius=radius,
        center=(center_x, center_y),
        travel=travel,
        spin=spin,
        growth=growth,
    )


def _object_region(camera: CameraSpec, aspect: float) -> tuple[float, float, float, float]:
    """The world box (left, right, top, bottom) objects must stay in so that they remain in frame
    for the whole clip despite the camera: a pan moves the content the opposite way, a zoom-in
    magnifies about the centre."""
    half_w = _FRAME_LIMIT * max(aspect, 1.0)
    half_h = _FRAME_LIMIT * max(1.0 / aspect, 1.0)
    left, right, top, bottom = -half_w, half_w, -half_h, half_h
    pan = PAN_DIRECTIONS.get(camera.kind)
    if pan is not None:
        # The camera offset runs from 0 to pan * travel; a world point is on screen at every
        # moment only if it lies in the frame box shifted by each offset (their intersection).
        shift_x, shift_y = pan[0] * camera.travel, pan[1] * camera.travel
        left, right = left + max(shift_x, 0.0), right + min(shift_x, 0.0)
        top, bottom = top + max(shift_y, 0.0), bottom + min(shift_y, 0.0)
    if camera.kind == "zoom_in":
        left, right, top, bottom = (edge / camera.zoom for edge in (left, right, top, bottom))
    return left, right, top, bottom


def sample_scene(rng: np.random.Generator, vocab: SceneVocabulary, aspect: float = 1.0) -> SceneSpec:
    """Draw a random scene. `aspect` = width / height of the frame (sets the horizontal room).

    Scenes whose moving objects cannot travel a visible distance (a large object in a crowded or
    panning frame) are redrawn; after many failures (only with a narrow vocabulary) the last
    draw is kept.
    """
    for _ in range(_MAX_DRAWS):
        scene = _draw_scene(rng, vocab, aspect)
        moving = [obj for obj in scene.objects if obj.motion in MOTION_DIRECTIONS or obj.motion == "bouncing"]
        if all(obj.travel >= _MIN_TRAVEL for obj in moving):
            break
    return scene


def _draw_scene(rng: np.random.Generator, vocab: SceneVocabulary, aspect: float) -> SceneSpec:
    camera = _sample_camera(rng, vocab)
    background = _sample_background(rng, vocab, camera)
    backdrop = background_rgbs(background)
    object_colors = [c for c in vocab.colors if all(math.dist(COLOR_RGB[c], b) >= MIN_COLOR_DISTANCE for b in backdrop)]
    if not object_colors:
        # A vocabulary of only similar colours: fall back to anything that is not the background.
        named = {background.color, background.color2}
        object_colors = [c for c in vocab.colors if c not in named] or list(vocab.colors)
    left, right, top, bottom = _object_region(camera, aspect)
    two = len(object_colors) >= 2 and rng.random() < vocab.two_object_fraction
    if not two:
        first = _sample_object(rng, vocab, _choice(rng, object_colors), (left, right, top, bottom), 1.0)
        return SceneSpec((first,), background, camera)
    colors = [str(c) for c in rng.choice(object_colors, size=2, replace=False)]
    middle = (left + right) / 2
    first = _sample_object(rng, vocab, colors[0], (left, middle - 0.02, top, bottom), _TWO_OBJECT_SCALE)
    second = _sample_object(rng, vocab, colors[1], (middle + 0.02, right, top, bottom), _TWO_OBJECT_SCALE)
    return SceneSpec((first, second), background, camera)
