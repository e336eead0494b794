"""Differentiable image preprocessing for reward models (resize, crop or pad, normalise).

Everything is `torch.nn.functional.interpolate` and slicing, so gradients reach the frames; no
torchvision. Three ways to reach the square input a ViT needs, each matching one official path:

* ``letterbox``    HPSv2's evaluation transform as T2V-Turbo applies it to decoded frames (its
                   ``ResizeMaxSize``): scale the *longer* side to ``size`` (each side ``round()``-ed),
                   bicubic, then pad the shorter side with ``fill`` (black) split evenly, the extra
                   pixel going to the bottom/right. A 320x512 frame becomes 140x224 content with 42
                   rows of black above and below: HPS sees the whole frame, not a crop.
* ``center_crop``  CLIP's usual evaluation transform: scale the *shorter* side to ``size`` (the
                   longer side truncated with ``int()``, as torchvision's ``Resize(int)`` and the
                   transformers CLIP image processor do), bicubic, then a centred square crop.
* ``random_crop``  the video reward path of T2V-Turbo (``ResizeCropMinSize``): scale the shorter
                   side to ``size`` (each side ``round()``-ed), bicubic, then one random square crop,
                   the same window for every frame of the call.

Bicubic resizing uses ``antialias=True`` by default, which is what torchvision (>= 0.17) does for
tensors and what PIL does for downscaling. The arithmetic runs in float32 whatever the frames'
dtype (CPU antialiasing has no half-precision kernel); callers cast the result to the model dtype.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from hummingbird_t2v.errors import ConfigError

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ResizeMode = Literal["letterbox", "center_crop", "random_crop"]
RESIZE_MODES: tuple[str, ...] = ("letterbox", "center_crop", "random_crop")


def resize(images: torch.Tensor, height: int, width: int, antialias: bool = True) -> torch.Tensor:
    """Bicubic resize of (n, 3, h, w) images (align_corners=False); no-op when the size already fits."""
    if images.shape[-2:] == (height, width):
        return images
    return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False, antialias=antialias)


def letterbox(images: torch.Tensor, size: int, fill: float = 0.0, antialias: bool = True) -> torch.Tensor:
    """Longer side -> `size`, then pad to `size` x `size` with `fill` (HPSv2's ResizeMaxSize)."""
    height, width = images.shape[-2:]
    scale = size / max(height, width)
    new_height, new_width = round(height * scale), round(width * scale)
    images = resize(images, new_height, new_width, antialias)
    pad_height, pad_width = size - new_height, size - new_width
    # F.pad takes (left, right, top, bottom) for the last two dimensions.
    padding = (pad_width // 2, pad_width - pad_width // 2, pad_height // 2, pad_height - pad_height // 2)
    return F.pad(images, padding, value=fill)


def resize_shorter_side(
    images: torch.Tensor, size: int, rounding: Literal["round", "truncate"], antialias: bool = True
) -> torch.Tensor:
    """Shorter side -> `size`, aspect kept; `rounding` says how the longer side's length is made whole."""
    height, width = images.shape[-2:]
    if rounding == "round":
        scale = size / min(height, width)
        new_height, new_width = round(height * scale), round(width * scale)
    elif height <= width:
        new_height, new_width = size, int(size * width / height)
    else:
        new_height, new_width = int(size * height / width), size
    return resize(images, new_height, new_width, antialias)


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """Centred `size` x `size` window (offsets rounded like torchvision's CenterCrop)."""
    height, width = images.shape[-2:]
    _check_crop(height, width, size)
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return images[..., top : top + size, left : left + size]


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly placed `size` x `size` window, shared by all images of the call."""
    height, width = images.shape[-2:]
    _check_crop(height, width, size)
    top = int(torch.randint(0, height - size + 1, (1,), generator=generator))
    left = int(torch.randint(0, width - size + 1, (1,), generator=generator))
    return images[..., top : top + size, left : left + size]


def _check_crop(height: int, width: int, size: int) -> None:
    if height < size or width < size:
        raise ConfigError(f"cannot crop {size}x{size} out of {height}x{width} images; resize them first")


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    mean_tensor = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images - mean_tensor) / std_tensor


@dataclass(frozen=True)
class ImagePreprocess:
    """Frames in [0, 1] -> normalised `size` x `size` model input, differentiably."""

    size: int = 224
    mode: ResizeMode = "center_crop"
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    antialias: bool = True
    fill: float = 0.0  # letterbox padding, in [0, 1] pixel units (before normalisation)
    resize_size: int | None = None  # crop modes: shorter side before cropping (default: size)

    def __post_init__(self) -> None:
        if self.mode not in RESIZE_MODES:
            raise ConfigError(f"preprocessing mode must be one of {RESIZE_MODES}, got {self.mode!r}")
        if self.size < 1:
            raise ConfigError(f"preprocessing size must be positive, got {self.size}")
        if self.resize_size is not None and (self.mode == "letterbox" or self.resize_size < self.size):
            raise ConfigError(f"resize_size={self.resize_size} needs a crop mode and must be >= size={self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"mean and std need 3 entries each and a positive std, got {self.mean}, {self.std}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3, h, w) images in [0, 1] -> (n, 3, size, size) float32 model input."""
        images = images.float()
        if self.mode == "letterbox":
            images = letterbox(images, self.size, self.fill, self.antialias)
        elif self.mode == "center_crop":
            images = resize_shorter_side(images, self.resize_size or self.size, "truncate", self.antialias)
            images = center_crop(images, self.size)
        else:
            images = resize_shorter_side(images, self.resize_size or self.size, "round", self.antialias)
            images = random_crop(images, self.size, generator)
        return normalize(images, self.mean, self.std)
