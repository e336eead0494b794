"""Render a `SceneSpec` to uint8 frames with numpy, all frames at once.

Each shape is a signed distance function in its own unit frame; the distance converted to pixels
gives an anti-aliased coverage (a one-pixel ramp across the edge), which keeps edges smooth and
motion free of stair-step jitter even at 32x32. The camera maps screen to world coordinates per
frame: panning shifts, zooming scales about the frame centre, and a dolly zoom scales only the
background so the subject keeps its size while the backdrop stretches or shrinks behind it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from hummingbird_t2v.toyworld.scene import BackgroundSpec, CameraSpec, ObjectSpec, SceneSpec, texture_shade
from hummingbird_t2v.toyworld.vocabulary import COLOR_RGB, MOTION_DIRECTIONS, PAN_DIRECTIONS

__all__ = ["render_scene"]


def _polygon_distance(
    qx: np.ndarray, qy: np.ndarray, sides: int, circumradius: float, first_normal: float
) -> np.ndarray:
    """Distance to a regular polygon: the largest signed distance to its edge lines (exact along
    the edges, slightly short near corners, which only softens corners by a fraction of a pixel)."""
    apothem = circumradius * math.cos(math.pi / sides)
    angles = [first_normal + 2 * math.pi * k / sides for k in range(sides)]
    edges = (qx * math.cos(angle) + qy * math.sin(angle) - apothem for angle in angles)
    return functools.reduce(np.maximum, edges)


def _box_distance(qx: np.ndarray, qy: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
    over_x = np.abs(qx) - half_x
    over_y = np.abs(qy) - half_y
    outside = np.hypot(np.maximum(over_x, 0.0), np.maximum(over_y, 0.0))
    inside = np.minimum(np.maximum(over_x, over_y), 0.0)
    return outside + inside


def _star_distance(qx: np.ndarray, qy: np.ndarray, outer: float = 1.2, inner: float = 0.5) -> np.ndarray:
    # Fold the plane into one half-spike: angle measured from "up", reduced to [0, pi/5].
    sector = 2 * math.pi / 5
    angle = np.arctan2(qx, -qy)
    folded = np.abs(np.mod(angle + sector / 2, sector) - sector / 2)
    rho = np.hypot(qx, qy)
    px, py = rho * np.cos(folded), rho * np.sin(folded)
    # The edge runs from the tip (outer, 0) to the inner corner at angle pi/5.
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = bx - outer, by
    length = math.hypot(ex, ey)
    nx, ny = ey / length, -ex / length  # normal pointing away from the centre
    return (px - outer) * nx + py * ny


def shape_distance(shape: str, qx: np.ndarray, qy: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) to a unit-sized shape, in its own units."""
    if shape == "circle":
        return np.hypot(qx, qy) - 1.0
    if shape == "ring":
        return np.abs(np.hypot(qx, qy) - 0.72) - 0.28
    if shape == "square":
        return _box_distance(qx, qy, 0.85, 0.85)
    if shape == "triangle":
        # Point up; normals of an up-pointing triangle sit at -30, 90 and 210 degrees (y down).
        return _polygon_distance(qx, qy - 0.15, 3, 1.25, -math.pi / 6)
    if shape == "hexagon":
        return _polygon_distance(qx, qy, 6, 1.0, math.pi / 6)
    if shape == "diamond":
        half_w, half_h = 0.75, 1.15
        return (np.abs(qx) * half_h + np.abs(qy) * half_w - half_w * half_h) / math.hypot(half_w, half_h)
    if shape == "star":
        return _star_distance(qx, qy)
    if shape == "cross":
        return np.minimum(_box_distance(qx, qy, 1.0, 0.33), _box_distance(qx, qy, 0.33, 1.0))
    raise ValueError(f"unknown shape {shape!r}")


def _camera_tracks(camera: CameraSpec, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: camera offset x, y, object zoom, background zoom."""
    offset_x = np.zeros_like(tau)
    offset_y = np.zeros_like(tau)
    zoom = np.ones_like(tau)
    if camera.kind in PAN_DIRECTIONS:
        direction_x, direction_y = PAN_DIRECTIONS[camera.kind]
        offset_x = direction_x * camera.travel * tau
        offset_y = direction_y * camera.travel * tau
    elif camera.kind in ("zoom_in", "zoom_out", "dolly_zoom"):
        zoom = camera.zoom**tau  # geometric, so the zoom speed looks constant
    if camera.kind == "dolly_zoom":
        return offset_x, offset_y, np.ones_like(tau), zoom
    return offset_x, offset_y, zoom, zoom


def _object_tracks(obj: ObjectSpec, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: centre x, y, radius and rotation angle of an object (world units)."""
    x = np.full_like(tau, obj.center[0])
    y = np.full_like(tau, obj.center[1])
    if obj.motion in MOTION_DIRECTIONS:
        direction_x, direction_y = MOTION_DIRECTIONS[obj.motion]
        x = x + direction_x * obj.travel * (tau - 0.5)
        y = y + direction_y * obj.travel * (tau - 0.5)
    elif obj.motion == "bouncing":
        height = np.abs(np.sin(math.pi * obj.bounces * tau))
        y = y + obj.travel * (0.5 - height)
    radius = obj.radius * obj.growth**tau
    angle = obj.spin * tau
    return x, y, radius, angle


def _square_wave(coordinate: np.ndarray, period: float, pixel: np.ndarray) -> np.ndarray:
    """Anti-aliased square wave in [0, 1] with edges every period / 2."""
    half = period / 2
    signed = np.abs(np.mod(coordinate, period) - half) - half / 2  # distance to the nearest edge
    return np.clip(0.5 + signed / pixel, 0.0, 1.0)


def _render_background(
    background: BackgroundSpec,
    world_x: np.ndarray,
    world_y: np.ndarray,
    pixel: np.ndarray,
    screen_x: np.ndarray,
    screen_y: np.ndarray,
) -> np.ndarray:
    base = np.asarray(COLOR_RGB[background.color], np.float32)
    if background.kind == "solid":
        return np.broadcast_to(base, (*np.broadcast_shapes(world_x.shape, world_y.shape), 3))
    if background.kind == "gradient":
        # Screen-space: gradients only appear with a still camera.
        cos_a, sin_a = math.cos(background.angle), math.sin(background.angle)
        reach = abs(cos_a) * np.abs(screen_x).max() + abs(sin_a) * np.abs(screen_y).max()
        mix = np.clip(0.5 + 0.5 * (screen_x * cos_a + screen_y * sin_a) / reach, 0.0, 1.0)
        far = np.asarray(COLOR_RGB[background.color2], np.float32)
        mix = np.broadcast_to(mix, np.broadcast_shapes(world_x.shape, world_y.shape))
        return base + (far - base) * mix[..., None]
    shade = np.asarray(texture_shade(COLOR_RGB[background.color]), np.float32)
    cell = background.cell
    if background.kind == "checkerboard":
        across = _square_wave(world_x, 2 * cell, pixel) * 2 - 1
        down = _square_wave(world_y, 2 * cell, pixel) * 2 - 1
        mix = 0.5 - 0.5 * across * down
    elif background.kind == "stripes":
        along = world_x * math.cos(background.angle) + world_y * math.sin(background.angle)
        mix = _square_wave(along, cell, pixel)
    elif background.kind == "dots":
        offset_x = np.mod(world_x, cell) - cell / 2
        offset_y = np.mod(world_y, cell) - cell / 2
        mix = np.clip(0.5 - (np.hypot(offset_x, offset_y) - 0.22 * cell) / pixel, 0.0, 1.0)
    else:
        raise ValueError(f"unknown background {background.kind!r}")
    return base + (shade - base) * mix[..., None]


def render_scene(scene: SceneSpec, height: int, width: int, num_frames: int) -> np.ndarray:
    """Draw the scene: uint8 (num_frames, height, width, 3)."""
    tau = np.linspace(0.0, 1.0, num_frames, dtype=np.float32) if num_frames > 1 else np.zeros(1, np.float32)
    half_short = min(height, width) / 2
    screen_x = ((np.arange(width, dtype=np.float32) + 0.5 - width / 2) / half_short)[None, None, :]
    screen_y = ((np.arange(height, dtype=np.float32) + 0.5 - height / 2) / half_short)[None, :, None]
    offset_x, offset_y, object_zoom, background_zoom = (
        track[:, None, None].astype(np.float32) for track in _camera_tracks(scene.camera, tau)
    )

    background_pixel = (1.0 / half_short) / background_zoom  # one pixel in background world units
    frames = _render_background(
        scene.background,
        screen_x / background_zoom + offset_x,
        screen_y / background_zoom + offset_y,
        background_pixel,
        screen_x,
        screen_y,
    ).astype(np.float32)
    frames = np.broadcast_to(frames, (num_frames, height, width, 3)).copy()

    world_x = screen_x / object_zoom + offset_x  # (T, 1, W)
    world_y = screen_y / object_zoom + offset_y  # (T, H, 1)
    for obj in scene.objects:
        x, y, radius, angle = (track[:, None, None].astype(np.float32) for track in _object_tracks(obj, tau))
        delta_x, delta_y = world_x - x, world_y - y
        cos_a, sin_a = np.cos(angle), np.sin(angle)
        local_x = (cos_a * delta_x + sin_a * delta_y) / radius
        local_y = (cos_a * delta_y - sin_a * delta_x) / radius
        distance_px = shape_distance(obj.shape, local_x, local_y) * radius * object_zoom * half_short
        coverage = np.clip(0.5 - distance_px, 0.0, 1.0)[..., None]
        color = np.asarray(COLOR_RGB[obj.color], np.float32)
        frames += (color - frames) * coverage
    return np.clip(frames + 0.5, 0, 255).astype(np.uint8)
