"""The small toy-world model that ships inside the package, so `hummingbird generate` works offline."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from hummingbird_t2v.checkpoints.folder import INDEX_NAME


def builtin_model_folder() -> Path | None:
    """The packaged model folder, or None in a build that does not ship one."""
    folder = Path(str(importlib.resources.files("hummingbird_t2v") / "assets" / "toy" / "model"))
    return folder if (folder / INDEX_NAME).is_file() else None
