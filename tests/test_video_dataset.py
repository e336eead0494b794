"""The training dataset: layouts, frame sampling, skipping bad files, per-rank sharding."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hummingbird_t2v.data import (
    ClipRecord,
    ClipTooShortError,
    DatasetError,
    FrameSampling,
    VideoClipDataset,
    load_clip_records,
    resize_center_crop,
    write_video,
)
from hummingbird_t2v.data.sampling import choose_frame_window
from hummingbird_t2v.data.video_dataset import resolve_rank
from hummingbird_t2v.errors import ConfigError

SOURCE_FPS = 24
SMALL = FrameSampling(video_length=8, frame_stride=2, random_stride=True, height=16, width=16)


def _write_numbered(path: Path, count: int, height: int = 24, width: int = 40) -> None:
    """Frame t is a flat grey of level 10 + 4 t (t < 61), so sampled frames tell their index."""
    levels = (10 + 4 * np.arange(count)).astype(np.uint8)
    write_video(path, np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy(), SOURCE_FPS)


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _write_cut_short(path: Path) -> None:
    """An mp4 whose header (written first, "faststart") promises 30 frames but whose data is cut
    after the first few: it opens and probes fine, then decodes too few frames."""
    rng = np.random.default_rng(1)
    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=SOURCE_FPS)
    stream.width, stream.height, stream.pix_fmt = 40, 24, "yuv420p"
    for _ in range(30):
        image = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)  # noise: every frame is large
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 5])


@pytest.fixture()
def messy_folder(tmp_path: Path) -> tuple[Path, set[str], set[str]]:
    """A `path,text` CSV listing good clips next to every kind of bad file."""
    good = {f"good{i}.mp4" for i in range(5)}
    for name in good:
        _write_numbered(tmp_path / name, 30)
    _write_numbered(tmp_path / "short.mp4", 5)  # fewer frames than video_length
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a video")
    (tmp_path / "text.mp4").write_text("definitely not a video\n" * 30)
    whole = (tmp_path / "good0.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    _write_cut_short(tmp_path / "cut_short.mp4")
    bad = {
        "short.mp4",
        "empty.mp4",
        "notes.txt",
        "text.mp4",
        "truncated.mp4",
        "garbage.mp4",
        "cut_short.mp4",
        "missing.mp4",
    }  # missing.mp4 is listed but does not exist
    _write_csv(tmp_path / "data.csv", ["path", "text"], [[name, f"caption of {name}"] for name in sorted(good | bad)])
    return tmp_path, good, bad


def test_epoch_yields_exactly_the_good_clips_and_logs_the_bad(messy_folder, caplog) -> None:
    folder, good, bad = messy_folder
    dataset = VideoClipDataset.from_source(folder / "data.csv", SMALL, seed=3)
    with caplog.at_level(logging.WARNING, logger="hummingbird_t2v.data.video_dataset"):
        samples = list(dataset)

    assert sorted(Path(s["path"]).name for s in samples) == sorted(good)
    assert dataset.yielded == len(good) and dataset.skipped == len(bad)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for name in bad:
        assert str(folder / name) in logged
    for sample in samples:
        assert sample["caption"] == f"caption of {Path(sample['path']).name}"
        assert sample["video"].shape == (3, 8, 16, 16) and sample["video"].dtype == torch.float32
        assert -1.0 <= sample["video"].min() <= sample["video"].max() <= 1.0
        assert sample["fps"] in {SOURCE_FPS // stride for stride in (1, 2)}


def test_dataloader_workers_share_the_counters(messy_folder) -> None:
    folder, good, bad = messy_folder
    dataset = VideoClipDataset.from_source(folder / "data.csv", SMALL)
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    paths = [path for batch in loader for path in batch["path"]]
    assert sorted(Path(p).name for p in paths) == sorted(good)
    assert (dataset.yielded, dataset.skipped) == (len(good), len(bad))


def test_sampled_frames_follow_stride_start_and_fps(tmp_path: Path) -> None:
    _write_numbered(tmp_path / "clip.mp4", 60)
    sampling = FrameSampling(video_length=6, frame_stride=4, random_stride=True, head_skip=20, height=8, width=8)
    dataset = VideoClipDataset([ClipRecord(str(tmp_path / "clip.mp4"), "c")], sampling, seed=7)
    strides = set()
    for epoch in range(12):
        sample = dataset.load_clip(0, epoch)
        levels = (sample["video"][0, :, 4, 4].numpy() + 1) * 127.5
        indices = np.round((levels - 10) / 4).astype(int)
        stride = int(indices[1] - indices[0])
        assert np.all(np.diff(indices) == stride) and 1 <= stride <= 4
        assert indices[0] >= 20  # spare frames (60 - 5*stride - 1) always exceed the head skip here
        assert sample["fps"] == SOURCE_FPS // stride
        strides.add(stride)
    assert len(strides) > 1  # the stride really is random
    # The same (seed, epoch, index) gives the same clip.
    assert torch.equal(dataset.load_clip(0, 5)["video"], dataset.load_clip(0, 5)["video"])

    fixed = VideoClipDataset(
        dataset.records, FrameSampling(video_length=6, frame_stride=3, height=8, width=8, fixed_fps=8), seed=7
    )
    assert fixed.load_clip(0, 0)["fps"] == 8


def test_frame_window_rules() -> None:
    rng = np.random.default_rng(0)
    sampling = FrameSampling(video_length=16, frame_stride=6, random_stride=True, head_skip=35)
    for _ in range(200):
        window = choose_frame_window(200, sampling, rng)
        assert 1 <= window.stride <= 6 and window.last < 200
        assert window.start >= 35  # 200 frames leave more than 35 spare for every stride
    # Too short for the drawn stride: the official fallback stride = n // video_length.
    window = choose_frame_window(40, FrameSampling(video_length=16, frame_stride=6), rng)
    assert window.stride == 2 and window.last < 40
    # Spare range not above the head skip: the start may be anywhere.
    starts = {choose_frame_window(30, FrameSampling(video_length=16, head_skip=35), rng).start for _ in range(100)}
    assert min(starts) < 35 and max(starts) <= 14
    with pytest.raises(ClipTooShortError):
        choose_frame_window(15, FrameSampling(video_length=16), rng)


def test_resize_covers_target_and_crops_the_centre() -> None:
    # 40x80 source: left quarter red, middle half green, right quarter blue.
    frame = np.zeros((1, 40, 80, 3), np.uint8)
    frame[:, :, :20, 0] = 255
    frame[:, :, 20:60, 1] = 255
    frame[:, :, 60:, 2] = 255
    video = resize_center_crop(frame, 32, 32)  # scale 0.8 -> 32x64, keep columns 16..47
    assert video.shape == (3, 1, 32, 32)
    assert torch.allclose(video[:, 0, :, 2:-2].mean(dim=(1, 2)), torch.tensor([-1.0, 1.0, -1.0]), atol=1e-3)
    # Portrait source into a landscape target: the width decides the scale.
    assert resize_center_crop(np.zeros((2, 50, 20, 3), np.uint8), 16, 32).shape == (3, 2, 16, 32)


def test_shards_are_disjoint_cover_everything_and_reshuffle_per_epoch() -> None:
    records = [ClipRecord(f"clip{i}.mp4", "") for i in range(101)]
    shards = {}
    for rank in range(2):
        dataset = VideoClipDataset(records, rank=rank, world_size=2, seed=11)
        shards[rank] = dataset.shard_indices(epoch=0)
        assert len(dataset) == len(shards[rank])
        assert dataset.shard_indices(epoch=0) == shards[rank]  # deterministic
        assert dataset.shard_indices(epoch=1) != shards[rank]  # new shuffle each epoch
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(101))
    assert abs(len(shards[0]) - len(shards[1])) <= 1


def test_two_ranks_read_disjoint_clips(messy_folder) -> None:
    folder, good, _ = messy_folder
    seen = []
    for rank in range(2):
        dataset = VideoClipDataset.from_source(folder / "data.csv", SMALL, rank=rank, world_size=2, seed=5)
        seen.append({Path(sample["path"]).name for sample in dataset})
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == good


def test_rank_comes_from_torch_distributed_when_initialised(tmp_path: Path) -> None:
    assert resolve_rank(None, None) == (0, 1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert resolve_rank(None, None) == (0, 1)
        assert resolve_rank(1, 3) == (1, 3)  # explicit values win
    finally:
        torch.distributed.destroy_process_group()
    with pytest.raises(ConfigError, match="rank"):
        resolve_rank(2, 2)


def test_repeat_streams_over_epochs_and_stops_when_nothing_decodes(messy_folder, tmp_path: Path) -> None:
    folder, good, _ = messy_folder
    stream = iter(VideoClipDataset.from_source(folder / "data.csv", SMALL, repeat=True))
    names = [Path(next(stream)["path"]).name for _ in range(3 * len(good))]
    assert sorted(names) == sorted(list(good) * 3)

    (tmp_path / "bad.mp4").write_bytes(b"")
    hopeless = VideoClipDataset([ClipRecord(str(tmp_path / "bad.mp4"), "")], SMALL, repeat=True)
    with pytest.raises(DatasetError, match="none of the 1 clips"):
        next(iter(hopeless))


def test_webvid_layout(tmp_path: Path) -> None:
    (tmp_path / "videos" / "page7").mkdir(parents=True)
    _write_numbered(tmp_path / "videos" / "page7" / "1001.mp4", 20)
    _write_numbered(tmp_path / "videos" / "page7" / "1002.mp4", 20)
    _write_csv(
        tmp_path / "meta.csv",
        ["videoid", "page_dir", "name", "duration"],
        [
            ["1001", "page7", "a dog runs", "PT00H00M10S"],
            ["1002", "page7", "waves", "PT00H00M08S"],
        ],
    )
    records = load_clip_records(tmp_path / "meta.csv")
    assert records == [
        ClipRecord(str(tmp_path / "videos" / "page7" / "1001.mp4"), "a dog runs"),
        ClipRecord(str(tmp_path / "videos" / "page7" / "1002.mp4"), "waves"),
    ]
    captions = sorted(sample["caption"] for sample in VideoClipDataset(records, SMALL))
    assert captions == ["a dog runs", "waves"]


def test_csv_paths_resolve_against_the_csv_folder_or_data_root(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    _write_csv(tmp_path / "lists" / "train.csv", ["path", "text", "score"], [["clips/a.mp4", "A", "0.9"]])
    assert load_clip_records(tmp_path / "lists" / "train.csv")[0].path == str(tmp_path / "lists" / "clips" / "a.mp4")
    rooted = load_clip_records(tmp_path / "lists" / "train.csv", data_root=tmp_path / "store")
    assert rooted[0].path == str(tmp_path / "store" / "clips" / "a.mp4")

    _write_csv(tmp_path / "odd.csv", ["file", "caption"], [["a.mp4", "A"]])
    with pytest.raises(DatasetError, match="path,text"):
        load_clip_records(tmp_path / "odd.csv")
    with pytest.raises(DatasetError, match="no such"):
        load_clip_records(tmp_path / "nowhere.csv")


def test_folder_layout_with_captions_jsonl_and_sidecars(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "b.mp4", "sub/c.mp4"):
        _write_numbered(tmp_path / name, 10)
    (tmp_path / "captions.jsonl").write_text(
        json.dumps({"path": "a.mp4", "text": "first"})
        + "\n"
        + json.dumps({"path": "sub/c.mp4", "text": "third"})
        + "\n"
    )
    (tmp_path / "b.txt").write_text("second\n")
    records = load_clip_records(tmp_path)
    assert {Path(r.path).name: r.caption for r in records} == {"a.mp4": "first", "b.mp4": "second", "c.mp4": "third"}

    (tmp_path / "b.txt").unlink()
    with pytest.raises(DatasetError, match="1 videos have no caption"):
        load_clip_records(tmp_path)
