"""DOVER: key layout of the released model, loading, views and fusion, with tiny random weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from curation_helpers import natural_texture, pan_camera, render, write_video
from safetensors.torch import save_file

from hummingbird_t2v.curation.dover import (
    DOVER,
    DoverArchitecture,
    DoverSampling,
    DoverScorer,
    _segment_indices,
    fuse,
    load_dover_state,
    sample_views,
)
from hummingbird_t2v.errors import CheckpointError

TINY = DoverArchitecture(
    swin_embed_dim=8, swin_depths=(2, 2, 2, 2), swin_heads=(1, 2, 2, 4), swin_window=(4, 7, 7),
    convnext_dims=(8, 16, 16, 32), convnext_depths=(1, 1, 3, 1), head_hidden=4,
)
TINY_SAMPLING = DoverSampling(fragments=7, fragment_size=8, clip_len=8, frame_interval=2, technical_clips=3, aesthetic_size=56)


def test_released_layout_key_names_and_shapes():
    with torch.device("meta"):
        state = DOVER().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    # Swin-T 3D: window (8, 7, 7) -> (2*8-1)(2*7-1)^2 = 2535 relative positions; GRPB in stages 1-3 only.
    assert shapes["technical_backbone.patch_embed.proj.weight"] == (96, 3, 2, 4, 4)
    assert shapes["technical_backbone.layers.0.blocks.1.attn.relative_position_bias_table"] == (2535, 3)
    assert shapes["technical_backbone.layers.2.blocks.5.attn.fragment_position_bias_table"] == (2535, 12)
    assert shapes["technical_backbone.layers.3.blocks.1.attn.relative_position_index"] == (392, 392)
    assert not any(k.startswith("technical_backbone.layers.3") and "fragment" in k for k in shapes)
    assert shapes["technical_backbone.layers.2.downsample.reduction.weight"] == (768, 1536)
    assert shapes["technical_backbone.norm.weight"] == (768,)
    # ConvNeXt-T inflated: stem (2, 4, 4), temporal kernels 1, 3, 1 repeating, no classifier head.
    assert shapes["aesthetic_backbone.downsample_layers.0.0.weight"] == (96, 3, 2, 4, 4)
    assert shapes["aesthetic_backbone.downsample_layers.3.1.weight"] == (768, 384, 1, 2, 2)
    assert shapes["aesthetic_backbone.stages.2.7.dwconv.weight"] == (384, 1, 3, 7, 7)
    assert shapes["aesthetic_backbone.stages.2.8.dwconv.weight"] == (384, 1, 1, 7, 7)
    assert shapes["aesthetic_backbone.stages.3.2.gamma"] == (768,)
    assert not any(k.startswith("aesthetic_backbone.head") for k in shapes)
    for branch in ("technical", "aesthetic"):
        assert shapes[f"{branch}_head.fc_hid.weight"] == (64, 768, 1, 1, 1)
        assert shapes[f"{branch}_head.fc_last.weight"] == (1, 64, 1, 1, 1)
    parameters = sum(math.prod(s) for k, s in shapes.items() if not k.endswith("relative_position_index"))
    assert 55e6 < parameters < 57e6  # Swin-T (~28 M) + ConvNeXt-T (~28 M) + two small heads


def test_fusion_matches_the_published_formula():
    scores = fuse(0.1107, -0.08285)
    assert (scores.technical, scores.aesthetic, scores.overall) == pytest.approx((50.0, 50.0, 50.0))
    high = fuse(0.1107 + 0.07355, -0.08285 + 0.03774)
    sigmoid = lambda x: 100 / (1 + math.exp(-x))
    assert high.technical == pytest.approx(sigmoid(1)) and high.overall == pytest.approx(sigmoid(1.0))


def test_frame_sampling_follows_the_segment_rule():
    rng = np.random.default_rng(0)
    technical = _segment_indices(300, 3, 32, 2, rng)
    assert technical.shape == (96,) and all(np.diff(technical[:32]) == 2)
    assert technical[0] < 100 <= technical[32] < 200 <= technical[64] < 300
    aesthetic = _segment_indices(300, 32, 1, 2, rng)
    assert aesthetic.shape == (32,) and all(np.diff(aesthetic) > 0)
    assert _segment_indices(20, 3, 32, 2, rng).max() < 20  # short clips wrap around


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = DOVER(TINY)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "bias_table" in name:
                parameter.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("dover") / "tiny_dover.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_tiny_dover_scores_a_video_reproducibly(tiny_weights: Path, tmp_path: Path):
    texture = natural_texture(np.random.default_rng(0), 300, 400)
    frames = render(texture, pan_camera((72, 100), (20, 5), (100, 50)), (72, 100), 12.0, 3.0)
    video = write_video(tmp_path / "clip.mp4", frames, 12.0)
    technical, aesthetic = sample_views(video, TINY_SAMPLING, seed=1)
    assert technical.shape == (3, 3, 8, 56, 56) and aesthetic.shape == (1, 3, 8, 56, 56)
    assert technical.abs().max() < 3 and aesthetic.abs().mean() > 0.1  # normalised with ImageNet mean/std
    scorer = DoverScorer.from_file(tiny_weights, architecture=TINY, sampling=TINY_SAMPLING, seed=3)
    first = scorer.score_file(video)
    again = scorer.score_file(video)
    assert first == again
    assert all(0 < value < 100 for value in (first.technical, first.aesthetic, first.overall))
    assert fuse(first.raw_technical, first.raw_aesthetic) == first
    # The views matter: a different video gets different raw scores.
    other = write_video(tmp_path / "other.mp4", frames[:, ::-1].copy() // 2, 12.0)
    assert scorer.score_file(other).raw_technical != first.raw_technical


def test_fragment_bias_tables_are_used(tiny_weights: Path):
    state = load_dover_state(tiny_weights)
    views = (torch.randn(1, 3, 8, 56, 56), torch.randn(1, 3, 8, 56, 56))
    base = DoverScorer(state, architecture=TINY, sampling=TINY_SAMPLING).score_views(*views)
    changed = dict(state)
    key = "technical_backbone.layers.0.blocks.0.attn.fragment_position_bias_table"
    changed[key] = changed[key] + 5.0
    other = DoverScorer(changed, architecture=TINY, sampling=TINY_SAMPLING).score_views(*views)
    assert other.raw_technical != base.raw_technical and other.raw_aesthetic == base.raw_aesthetic


def test_wrong_or_unreadable_weights_are_checkpoint_errors(tiny_weights: Path, tmp_path: Path):
    state = load_dover_state(tiny_weights)
    with pytest.raises(CheckpointError, match="missing"):
        DoverScorer({k: v for k, v in state.items() if "head" not in k}, architecture=TINY)
    with pytest.raises(CheckpointError, match="another shape"):
        DoverScorer(state)  # tiny weights, released architecture
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_dover_state(tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="do not exist"):
        load_dover_state(tmp_path / "none.pth")
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert load_dover_state(wrapped).keys() == state.keys()


def test_pipeline_adds_dover_scores_and_percentile_drops(tiny_weights: Path, tmp_path: Path, monkeypatch):
    import pandas as pd
    from curation_helpers import TEST_CONFIG, make_defect_collection

    from hummingbird_t2v.curation import dover
    from hummingbird_t2v.curation.config import config_from_dict
    from hummingbird_t2v.curation.pipeline import run_curation

    folder = tmp_path / "clips"
    make_defect_collection(folder, pristine_count=1)
    for name in ("degraded_blur.mp4", "degraded_compression.mp4", "degraded_flicker.mp4", "dolly_zoom.mp4"):
        (folder / name).unlink()  # four readable clips (and the broken files) are enough here
    config = config_from_dict(
        {**TEST_CONFIG, "stages": ["quality"], "quality": {**TEST_CONFIG["quality"], "min_technical": None,
                                                          "dover": {"weights": str(tiny_weights), "min_overall": "p50"}}}
    )
    # The released architecture would take ~15 s per clip on CPU; the tiny one stands in for it.
    tiny = DoverScorer.from_file(tiny_weights, architecture=TINY, sampling=TINY_SAMPLING)
    monkeypatch.setitem(dover._SCORERS, (str(tiny_weights.resolve()), "cpu", 0), tiny)
    run_curation(folder, tmp_path / "out", config, show_progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    scored = manifest[manifest["status"] == "ok"]
    assert scored["dover_overall"].between(0, 100).all() and scored["dover_technical"].notna().all()
    dropped = scored["drop_reasons"].str.startswith("quality:dover_overall")
    assert dropped.sum() == (scored["dover_overall"] < scored["dover_overall"].median()).sum() > 0


def test_pipeline_rejects_unusable_dover_weights_before_measuring(tmp_path: Path):
    from curation_helpers import TEST_CONFIG

    from hummingbird_t2v.curation.config import config_from_dict
    from hummingbird_t2v.curation.pipeline import run_curation

    (tmp_path / "clips").mkdir()
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    config = config_from_dict({**TEST_CONFIG, "quality": {"dover": {"weights": str(tmp_path / "bad.pth")}}})
    with pytest.raises(CheckpointError):
        run_curation(tmp_path / "clips", tmp_path / "out", config, show_progress=False)
    assert not (tmp_path / "out").exists()


def test_fragment_mosaic_takes_each_patch_from_its_grid_cell():
    from hummingbird_t2v.curation.dover import _ViewBuilder

    sampling = DoverSampling(fragments=3, fragment_size=4, clip_len=2, frame_interval=1, technical_clips=2, aesthetic_size=8)
    builder = _ViewBuilder(sampling, np.array([0, 1, 2, 3]), np.array([0, 1]), np.random.default_rng(0))
    height, width = 30, 45  # cells of 10 x 15 pixels: random offsets inside each cell
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = np.arange(height)[:, None]  # red = row, green = column: the mosaic shows where it sampled
    frame[..., 1] = np.arange(width)[None, :]
    for index in range(4):
        builder.add(index, frame)
    for position in range(4):
        mosaic = builder.technical[:, position]
        group = position // sampling.clip_len
        for i in range(3):
            for j in range(3):
                patch = mosaic[:, i * 4 : (i + 1) * 4, j * 4 : (j + 1) * 4]
                top, left = int(patch[0, 0, 0]), int(patch[1, 0, 0])
                assert i * 10 <= top <= i * 10 + 6 and j * 15 <= left <= j * 15 + 11
                assert torch.equal(patch[0], torch.arange(top, top + 4.0)[:, None].expand(4, 4))
                assert torch.equal(patch[1], torch.arange(left, left + 4.0)[None, :].expand(4, 4))
        same_group = builder.technical[:, group * 2]
        assert torch.equal(mosaic, same_group)  # offsets are shared within a temporal group
    assert not torch.equal(builder.technical[:, 0], builder.technical[:, 2])
