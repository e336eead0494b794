"""A procedural text-video world small enough to run the whole recipe on a CPU.

`ToyWorld(ToyWorldConfig(seed=0)).clip(i)` renders clip i (frames, caption, ground-truth
attributes) in memory; `make_dataset(DIR, n)` (CLI: `hummingbird toyworld make --n N -o DIR`)
writes mp4 files plus a `path,text` CSV that the training loader reads. Modules:
`vocabulary` (attribute values and their words), `scene` (random scene specs), `render` (numpy
rasteriser), `degradations` (blur, noise, compression, frame drops, flicker), `captions`
(templates and paraphrases), `generator` (the world, datasets on disk and in memory), `cli`.
"""

from hummingbird_t2v.toyworld.degradations import Degradation, apply_degradation
from hummingbird_t2v.toyworld.generator import (
    ATTRIBUTE_COLUMNS,
    MakeReport,
    ToyClip,
    ToyWorld,
    ToyWorldConfig,
    ToyWorldDataset,
    ToyWorldError,
    make_dataset,
)
from hummingbird_t2v.toyworld.scene import SceneSpec, SceneVocabulary, describe_vocabulary

__all__ = [
    "ATTRIBUTE_COLUMNS",
    "Degradation",
    "MakeReport",
    "SceneSpec",
    "SceneVocabulary",
    "ToyClip",
    "ToyWorld",
    "ToyWorldConfig",
    "ToyWorldDataset",
    "ToyWorldError",
    "apply_degradation",
    "describe_vocabulary",
    "make_dataset",
]
