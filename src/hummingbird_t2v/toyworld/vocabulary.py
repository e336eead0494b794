"""The toy world's attribute values and the words that describe them.

Every attribute has a canonical name (what the CSV and the evaluator use) and a tuple of phrases
for captions; the first phrase is the canonical wording, the others are paraphrases, so a model
trained with paraphrases also understands e.g. "crimson disc drifting left".
"""

from __future__ import annotations

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc", "round shape"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape"),
    "star": ("star", "five-pointed star"),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon", "six-sided shape"),
    "ring": ("ring", "donut", "hoop"),
    "cross": ("cross", "plus sign"),
}
SHAPES: tuple[str, ...] = tuple(SHAPE_WORDS)
# Shapes that look the same at every angle: "rotating" would be invisible on them.
ROTATION_INVARIANT_SHAPES = frozenset({"circle", "ring"})

# sRGB values chosen to be far apart; pairs closer than MIN_COLOR_DISTANCE are never used as
# object and background together.
COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (245, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
    "brown": (130, 80, 40),
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "grass-green"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "azure", "cobalt"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "bubblegum"),
    "white": ("white", "snow-white", "ivory"),
    "black": ("black", "jet-black", "ebony"),
    "gray": ("gray", "grey", "silver"),
    "brown": ("brown", "chocolate", "chestnut"),
}
COLORS: tuple[str, ...] = tuple(COLOR_RGB)
MIN_COLOR_DISTANCE = 110.0  # Euclidean distance in 0..255 RGB

# Radius (half the frame's short side = 1) of a single object; two-object scenes scale it down
# so both fit side by side. Medium has no size word: it is the unmarked default.
SIZE_RADIUS: dict[str, float] = {"small": 0.17, "medium": 0.26, "large": 0.36}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "medium": ("", "medium-sized", "mid-sized"),
    "large": ("large", "big", "huge"),
}
SIZES: tuple[str, ...] = tuple(SIZE_RADIUS)

# Unit direction on screen (x right, y down) of the straight-line motions.
MOTION_DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_left": (-0.7071, -0.7071),
    "up_right": (0.7071, -0.7071),
    "down_left": (-0.7071, 0.7071),
    "down_right": (0.7071, 0.7071),
}
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "still": ("standing still", "resting", "sitting still"),
    "left": ("moving left", "drifting left", "sliding to the left", "gliding leftward"),
    "right": ("moving right", "drifting right", "sliding to the right", "gliding rightward"),
    "up": ("moving up", "rising", "floating upward", "drifting up"),
    "down": ("moving down", "falling", "sinking", "drifting down"),
    "up_left": ("moving up and to the left", "drifting diagonally up-left", "gliding toward the top left"),
    "up_right": ("moving up and to the right", "drifting diagonally up-right", "gliding toward the top right"),
    "down_left": ("moving down and to the left", "drifting diagonally down-left", "gliding toward the bottom left"),
    "down_right": (
        "moving down and to the right",
        "drifting diagonally down-right",
        "gliding toward the bottom right",
    ),
    "bouncing": ("bouncing", "bouncing up and down", "hopping"),
    "rotating": ("rotating", "spinning", "turning in place"),
    "growing": ("growing", "getting bigger", "expanding"),
    "shrinking": ("shrinking", "getting smaller", "contracting"),
}
MOTIONS: tuple[str, ...] = tuple(MOTION_WORDS)

# Background phrases take {c} (the colour word) or {c1}/{c2} (gradient ends).
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("on a {c} background", "against a {c} backdrop", "over a plain {c} background"),
    "gradient": ("on a {c1}-to-{c2} gradient background", "against a gradient from {c1} to {c2}"),
    "checkerboard": ("on a {c} checkerboard background", "against a {c} checkered backdrop"),
    "stripes": ("on a {c} striped background", "against {c} stripes"),
    "dots": ("on a {c} polka-dot background", "against a {c} dotted backdrop"),
}
BACKGROUNDS: tuple[str, ...] = tuple(BACKGROUND_WORDS)
# A camera move is only visible against a textured background; solid and gradient backgrounds
# are used with a still camera.
TEXTURED_BACKGROUNDS = frozenset({"checkerboard", "stripes", "dots"})

# Direction the camera travels in for each pan (the picture content moves the other way).
PAN_DIRECTIONS: dict[str, tuple[float, float]] = {
    "pan_left": (-1.0, 0.0),
    "pan_right": (1.0, 0.0),
    "pan_up": (0.0, -1.0),
    "pan_down": (0.0, 1.0),
}
CAMERA_WORDS: dict[str, tuple[str, ...]] = {
    "still": ("", ", static camera", ", locked-off shot"),
    "pan_left": (", the camera pans left", ", camera panning left", ", panning shot to the left"),
    "pan_right": (", the camera pans right", ", camera panning right", ", panning shot to the right"),
    "pan_up": (", the camera pans up", ", camera tilting up", ", panning shot upward"),
    "pan_down": (", the camera pans down", ", camera tilting down", ", panning shot downward"),
    "zoom_in": (", the camera zooms in", ", zooming in", ", slow zoom in"),
    "zoom_out": (", the camera zooms out", ", zooming out", ", slow zoom out"),
    "dolly_zoom": (", dolly zoom", ", the camera does a dolly zoom", ", vertigo dolly zoom effect"),
}
CAMERAS: tuple[str, ...] = tuple(CAMERA_WORDS)

DEGRADATIONS: tuple[str, ...] = ("blur", "noise", "compression", "frame_drop", "flicker")

