"""Shared test fixtures: where the reference tensors made from the official code live, and the
tiny teacher the distillation tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _reference_root() -> Path:
    return Path(os.environ.get("HUMMINGBIRD_REFERENCE", _DEFAULT_REFERENCE))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """../shared/reference (override with $HUMMINGBIRD_REFERENCE)."""
    root = _reference_root()
    if not (root / "golden").is_dir():
        pytest.skip(f"reference tensors not found at {root} (set HUMMINGBIRD_REFERENCE)")
    return root


@pytest.fixture(scope="session")
def golden_dir(reference_dir: Path) -> Path:
    return reference_dir / "golden"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny-vc2 teacher U-Net folder whose prediction is not zero (a fresh U-Net predicts exactly 0)."""
    from training_helpers import noisy_unet, save_unet_folder

    return save_unet_folder(noisy_unet("tiny-vc2", seed=0), tmp_path_factory.mktemp("teacher") / "unet")
