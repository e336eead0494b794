"""Video I/O (PyAV), datasets and frame sampling.

- `video_io`: probe, read and write videos (atomic writes), GIF export, in-memory encode/decode.
- `manifest`: list (path, caption) records from a `path,text` CSV, a WebVid `videoid,page_dir,name`
  CSV, or a folder of videos with `captions.jsonl` / per-video .txt captions.
- `sampling`: the official loaders' frame sampling (stride, head skip, resize + centre crop, fps
  condition) as plain functions and a `FrameSampling` config.
- `video_dataset`: `VideoClipDataset`, an IterableDataset that shards per rank, shuffles by
  seed + epoch and skips (counts, logs) clips that cannot be decoded.
"""

from hummingbird_t2v.data.manifest import ClipRecord, DatasetError, load_clip_records
from hummingbird_t2v.data.sampling import (
    STAGE1_SAMPLING,
    STAGE2_SAMPLING,
    ClipTooShortError,
    FrameSampling,
    frames_to_tensor,
    resize_center_crop,
)
from hummingbird_t2v.data.video_dataset import VideoClipDataset
from hummingbird_t2v.data.video_io import (
    VideoDecodeError,
    VideoInfo,
    probe_video,
    read_video,
    write_gif,
    write_video,
)

__all__ = [
    "STAGE1_SAMPLING",
    "STAGE2_SAMPLING",
    "ClipRecord",
    "ClipTooShortError",
    "DatasetError",
    "FrameSampling",
    "VideoClipDataset",
    "VideoDecodeError",
    "VideoInfo",
    "frames_to_tensor",
    "load_clip_records",
    "probe_video",
    "read_video",
    "resize_center_crop",
    "write_gif",
    "write_video",
]
