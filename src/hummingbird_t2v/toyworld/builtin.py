"""The small toy-world model that ships inside the package, so `hummingbird generate` works offline."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from hummingbird_t2v.checkpoints.folder import INDEX_NAME, read_json
from hummingbird_t2v.toyworld.scene import SceneVocabulary, resolve_vocabulary


def builtin_model_folder() -> Path | None:
    """The packaged model folder, or None in a build that does not ship one."""
    folder = Path(str(importlib.resources.files("hummingbird_t2v") / "assets" / "toy" / "model"))
    return folder if (folder / INDEX_NAME).is_file() else None


def model_toy_vocabulary(folder: str | Path) -> SceneVocabulary | None:
    """The toy vocabulary a model folder was trained on (recorded by the trainer's export as
    `extra.toy_vocabulary` in model_index.json), or None for a folder that records none."""
    index = Path(folder) / INDEX_NAME
    if not index.is_file():
        return None
    recorded = read_json(index).get("extra", {}).get("toy_vocabulary")
    return None if recorded is None else resolve_vocabulary(recorded)
