"""Unit tests of the curation building blocks: config, sources, quality signals, motion, journal, decisions."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from curation_helpers import add_noise, blur, dolly_zoom, natural_texture, pan_camera, render, write_video, zoom_camera

from hummingbird_t2v.curation.config import CurateConfig, Threshold, config_from_dict, config_to_dict, load_config
from hummingbird_t2v.curation.decisions import decide, resolve
from hummingbird_t2v.curation.journal import Journal
from hummingbird_t2v.curation.motion import analyse_motion, fit_similarity
from hummingbird_t2v.curation.probe import DecodePlan, ProbeFailure, decode_for_analysis, probe_video
from hummingbird_t2v.curation.quality import blockiness, detail_ratio, flicker_percent, noise_sigma, technical_quality
from hummingbird_t2v.curation.sources import InputError, discover
from hummingbird_t2v.errors import ConfigError, HummingbirdError

SIZE = (96, 160)
FPS = 12.0


@pytest.fixture(scope="module")
def texture() -> np.ndarray:
    return natural_texture(np.random.default_rng(1), SIZE[0] * 3, SIZE[1] * 3)


# ----------------------------------------------------------------------------- config


def test_threshold_parsing_accepts_numbers_and_percentiles():
    assert Threshold.parse(0.4, "k") == Threshold(0.4)
    assert Threshold.parse("p10", "k") == Threshold(10.0, percentile=True)
    assert Threshold.parse("25%", "k") == Threshold(25.0, percentile=True)
    assert Threshold.parse(None, "k") is None
    with pytest.raises(ConfigError, match="between 0 and 100"):
        Threshold.parse("p100", "k")
    with pytest.raises(ConfigError, match="neither a number"):
        Threshold.parse("high", "k")


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="quality.min_sharpness"):
        config_from_dict({"quality": {"min_sharpness": 3}})
    with pytest.raises(ConfigError, match="unknown stage"):
        config_from_dict({"stages": ["quality", "colour"]})
    with pytest.raises(ConfigError, match="engine.kind"):
        config_from_dict({"engine": {"kind": "spark"}})
    with pytest.raises(ConfigError, match="expected a number"):
        config_from_dict({"probe": {"sample_fps": "fast"}})


def test_config_round_trips_and_shipped_yaml_loads():
    config = config_from_dict({"quality": {"min_technical": "p15", "dover": {"min_overall": 40}}, "stages": "motion,quality"})
    assert config.stages == ("quality", "motion")
    assert config_from_dict(config_to_dict(config)) == config
    shipped = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(shipped.glob("curation*.yaml")):
        assert isinstance(load_config(path), CurateConfig), path


def test_measurement_fingerprint_ignores_thresholds_but_not_analysis_settings():
    base = CurateConfig()
    assert base.measurement_fingerprint() == config_from_dict({"quality": {"min_technical": 0.9}}).measurement_fingerprint()
    assert base.measurement_fingerprint() != config_from_dict({"probe": {"sample_fps": 4}}).measurement_fingerprint()


# ----------------------------------------------------------------------------- sources


def test_csv_layouts_resolve_paths(tmp_path: Path):
    (tmp_path / "videos" / "000").mkdir(parents=True)
    (tmp_path / "stage1.csv").write_text("path,text\na/b.mp4,a cat\n/abs/c.mp4,a dog\na/b.mp4,dup\n")
    (tmp_path / "stage2.csv").write_text("videoid,page_dir,name,duration\n42,000,a bird,PT10S\n")
    stage1 = discover(tmp_path / "stage1.csv")
    assert stage1.layout == "path_text"
    assert [r["clip_id"] for r in stage1.records] == ["a/b.mp4", "/abs/c.mp4", "a/b.mp4#1"]
    assert stage1.records[0]["path"] == str(tmp_path.resolve() / "a/b.mp4")
    assert stage1.records[1]["path"] == "/abs/c.mp4"
    stage2 = discover(tmp_path / "stage2.csv")
    assert stage2.layout == "webvid"
    assert stage2.records[0]["path"] == str(tmp_path.resolve() / "videos" / "000" / "42.mp4")
    assert stage2.records[0]["caption"] == "a bird"


def test_bad_inputs_are_user_errors(tmp_path: Path):
    (tmp_path / "other.csv").write_text("url,title\nx,y\n")
    with pytest.raises(InputError, match="expected 'path,text'"):
        discover(tmp_path / "other.csv")
    with pytest.raises(InputError, match="does not exist"):
        discover(tmp_path / "missing")
    assert issubclass(InputError, HummingbirdError)


def test_folder_reads_sidecar_captions_and_keeps_non_video_files_for_the_probe(tmp_path: Path):
    (tmp_path / "clip.mp4").write_bytes(b"x")
    (tmp_path / "clip.txt").write_text("a red kite\n")
    (tmp_path / "notes.md").write_text("not a clip")
    (tmp_path / "weird.bin").write_bytes(b"\0")
    records = discover(tmp_path).records
    assert [r["clip_id"] for r in records] == ["clip.mp4", "weird.bin"]
    assert records[0]["caption"] == "a red kite"


# ----------------------------------------------------------------------------- probe


def test_probe_reads_facts_and_samples_at_fixed_rate(tmp_path: Path, texture: np.ndarray):
    frames = render(texture, pan_camera(SIZE, (30, 0), (160, 96)), SIZE, 24.0, 2.0)
    path = write_video(tmp_path / "clip.mp4", frames, 24.0)
    info = probe_video(path)
    assert (info.width, info.height, info.codec) == (160, 96, "h264")
    assert info.fps == pytest.approx(24.0) and info.duration_s == pytest.approx(2.0, abs=0.05)
    clip = decode_for_analysis(path, DecodePlan(sample_fps=6.0, analysis_short_side=48, quality_frames=3))
    assert clip.frames.shape == (12, 48, 80, 3)
    assert np.allclose(np.diff(clip.times), 1 / 6, atol=1 / 24 + 1e-6)
    assert len(clip.luma_means) == 48 and len(clip.quality_luma) == 3
    assert clip.quality_luma[0].shape == (96, 160)


def test_probe_failures_have_reasons(tmp_path: Path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("hello")
    cases = {"missing.mp4": "missing", "empty.mp4": "empty_file", "text.mp4": "unreadable"}
    for name, reason in cases.items():
        with pytest.raises(ProbeFailure) as failure:
            decode_for_analysis(tmp_path / name)
        assert failure.value.reason == reason


# ----------------------------------------------------------------------------- quality


def _luma(frames: np.ndarray) -> list[np.ndarray]:
    return [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]


def test_each_quality_signal_moves_the_right_way(texture: np.ndarray):
    rng = np.random.default_rng(3)
    frame = cv2.cvtColor(texture[: 2 * SIZE[0], : 2 * SIZE[1]], cv2.COLOR_RGB2GRAY)
    blurred = cv2.GaussianBlur(frame, (0, 0), 1.6)
    noisy = np.clip(frame + rng.normal(0, 12, frame.shape), 0, 255).astype(np.uint8)
    assert detail_ratio(blurred) < 0.5 * detail_ratio(frame)
    assert noise_sigma(noisy) > 3 * max(noise_sigma(frame), 1.0)
    # A block grid: each 8x8 block replaced by its mean (what a starved DCT codec does).
    blocky = cv2.resize(cv2.resize(frame, None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA), frame.shape[::-1],
                        interpolation=cv2.INTER_NEAREST)
    assert blockiness(blocky) > 1.6  # the "bad" point of the blockiness ramp
    assert blockiness(frame) < 1.15  # its "good" point
    steady = np.full(48, 120.0) + np.linspace(0, 10, 48)
    flickering = steady * (1 + 0.2 * np.where(np.arange(48) % 2, 1, -1))
    assert flicker_percent(steady) < 0.5 and flicker_percent(flickering) > 10


def test_degraded_copies_score_below_their_source(texture: np.ndarray):
    rng = np.random.default_rng(4)
    frames = render(texture, pan_camera(SIZE, (25, 10), (160, 96)), SIZE, FPS, 1.0)
    means = np.array([f.mean() for f in _luma(frames)])

    def score(clip: np.ndarray, luma_means: np.ndarray = means) -> float:
        from hummingbird_t2v.curation.quality import QualityRamps, Ramp

        ramps = QualityRamps(resolution=Ramp(good=90, bad=48))
        return technical_quality(_luma(clip)[:6], luma_means, min(SIZE), ramps).score

    source = score(frames)
    assert source > 0.9
    assert score(blur(frames)) < 0.5 * source
    assert score(add_noise(frames, rng)) < 0.5 * source
    assert score(frames, means * (1 + 0.2 * np.where(np.arange(len(means)) % 2, 1, -1))) < 0.5 * source
    dark = (frames * 0.08).astype(np.uint8)
    assert score(dark, means * 0.08) < 0.5 * source


# ----------------------------------------------------------------------------- motion


def test_similarity_fit_recovers_parameters_despite_outliers():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-0.8, 0.8, (2, 400))
    u = 0.1 + 0.3 * x - 0.05 * y
    v = -0.2 + 0.05 * x + 0.3 * y
    u[:80] += rng.uniform(1, 2, 80)  # a moving subject
    fit = fit_similarity(x, y, u, v)
    assert (fit.pan, fit.tilt, fit.zoom, fit.rotation) == pytest.approx((0.1, -0.2, 0.3, 0.05), abs=1e-3)


def _motion(frames: np.ndarray):
    return analyse_motion(frames[::2], np.arange(0, len(frames), 2) / FPS)


def test_motion_reads_pan_direction_zoom_static_and_dolly(texture: np.ndarray):
    rng = np.random.default_rng(2)
    right = _motion(render(texture, pan_camera(SIZE, (40, 0), (160, 96)), SIZE, FPS, 2.0))
    assert right.camera_motion == "camera pans right" and right.pan < 0 and not right.is_dolly_zoom
    down = _motion(render(texture, pan_camera(SIZE, (0, 30), (160, 96)), SIZE, FPS, 2.0))
    assert "tilts down" in down.camera_motion
    zoom = _motion(render(texture, zoom_camera(SIZE, (240, 144), 0.4), SIZE, FPS, 2.0))
    assert zoom.zoom > 0.15 and "zooms in" in zoom.camera_motion and not zoom.is_dolly_zoom
    still = _motion(np.repeat(texture[None, :96, :160], 24, axis=0))
    assert still.is_static and still.camera_motion == "static shot" and still.smoothness == pytest.approx(1.0)
    subject = natural_texture(rng, 48, 48)
    for rate in (0.6, -0.3):  # dolly in/zoom out and the opposite
        dolly = _motion(dolly_zoom(texture, subject, SIZE, FPS, 2.0, rate))
        assert dolly.is_dolly_zoom, dolly.explanation
        assert "dolly evidence" in dolly.explanation


def test_smoothness_drops_for_erratic_frames(texture: np.ndarray):
    smooth = _motion(render(texture, pan_camera(SIZE, (20, 0), (160, 96)), SIZE, FPS, 2.0))
    shuffled = render(texture, pan_camera(SIZE, (20, 0), (160, 96)), SIZE, FPS, 2.0)[np.random.default_rng(0).permutation(24)]
    erratic = _motion(shuffled)
    assert erratic.smoothness < smooth.smoothness - 0.01


# ----------------------------------------------------------------------------- journal and decisions


def test_journal_survives_a_torn_last_line(tmp_path: Path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.append({"clip_id": "a", "v": 1})
    journal.append({"clip_id": "b", "v": float("nan")})
    journal.append({"clip_id": "a", "v": 2})
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"clip_id": "c", "v"')  # killed mid-write
    loaded = Journal(path).load()
    assert loaded == {"a": {"clip_id": "a", "v": 2}, "b": {"clip_id": "b", "v": None}}
    assert path.read_bytes().endswith(b"\n")
    with Journal(path) as again:
        again.append({"clip_id": "c", "v": 3})
    assert Journal(path).load()["c"] == {"clip_id": "c", "v": 3}
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_percentile_thresholds_use_the_collection():
    resolved = resolve(Threshold(50, percentile=True), [0.1, 0.2, 0.3, 0.4, None])
    assert resolved.cutoff == pytest.approx(0.25) and resolved.label.startswith("p50=")
    records = [
        {"clip_id": str(i), "status": "ok", "duration_s": 2.0, "quality_score": s, "is_static": False, "is_dolly_zoom": False}
        for i, s in enumerate([0.2, 0.6, 0.7, 0.9])
    ] + [{"clip_id": "bad", "status": "failed", "failure_reason": "truncated", "failure_detail": "x"}]
    config = config_from_dict({"quality": {"min_technical": "p30"}, "motion": {"min_smoothness": None}})
    decided = {r["clip_id"]: r for r in decide(records, config)}
    assert [decided[str(i)]["keep"] for i in range(4)] == [False, True, True, True]
    assert decided["0"]["drop_reasons"].startswith("quality:technical (0.2 < p30=")
    assert decided["bad"]["drop_reasons"].startswith("probe:truncated")
