"""Hummingbird-T2V: efficient text-to-video (pruned VideoCrafter2 U-Net, 4-step consistency sampling)."""

__version__ = "0.1.0"
