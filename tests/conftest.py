"""Shared test fixtures: where the reference tensors made from the official code live."""

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
