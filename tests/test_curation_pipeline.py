"""End-to-end curation runs on a generated collection with known defects (local engine, CLI, resume)."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from curation_helpers import TEST_CONFIG, check_outcomes, make_defect_collection

from hummingbird_t2v.curation import cli
from hummingbird_t2v.curation.config import config_from_dict
from hummingbird_t2v.curation.pipeline import RunStateError, run_curation
from hummingbird_t2v.errors import ConfigError


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("collection")
    return folder, make_defect_collection(folder)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hummingbird")
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["curate", *argv])
    return args.func(args)


def write_config(path: Path, overrides: dict | None = None) -> Path:
    config = {**TEST_CONFIG, **(overrides or {})}
    path.write_text(yaml.safe_dump(config))
    return path


def test_defect_collection_local_engine(collection, tmp_path: Path):
    folder, expected = collection
    summary = run_curation(folder, tmp_path / "out", config_from_dict(TEST_CONFIG), show_progress=False)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    check_outcomes(manifest, expected)
    assert summary.kept == sum(o.keep for o in expected.values())
    # The manifest carries the facts and the explanation of each detector.
    pristine = manifest.set_index("clip_id").loc["pristine_0.mp4"]
    assert (pristine.width, pristine.height, pristine.codec) == (160, 96, "h264")
    assert pristine.duration_s == pytest.approx(2.0, abs=0.1) and pristine.fps == pytest.approx(12.0)
    assert 0.9 < pristine.quality_score <= 1.0 and "pans" in pristine.camera_motion
    dolly = manifest.set_index("clip_id").loc["dolly_zoom.mp4"]
    assert "dolly evidence" in dolly.motion_explanation and dolly.is_dolly_zoom
    assert pd.read_csv(tmp_path / "out" / "manifest.csv")["clip_id"].tolist() == manifest["clip_id"].tolist()
    curated = list(csv.DictReader((tmp_path / "out" / "curated.csv").open()))
    kept = sorted(name for name, o in expected.items() if o.keep)
    assert sorted(Path(row["path"]).name for row in curated) == kept
    assert all(Path(row["path"]).is_absolute() for row in curated)


def test_process_pool_matches_in_process(collection, tmp_path: Path):
    folder, expected = collection
    config = config_from_dict({**TEST_CONFIG, "engine": {"workers": 2}})
    run_curation(folder, tmp_path / "pool", config, show_progress=False)
    manifest = pd.read_parquet(tmp_path / "pool" / "manifest.parquet")
    check_outcomes(manifest, expected)


def test_webvid_csv_in_and_out(collection, tmp_path: Path):
    folder, _ = collection
    data = tmp_path / "data"
    (data / "videos" / "00001").mkdir(parents=True)
    for name in ("pristine_1.mp4", "static.mp4", "zero_length.mp4"):
        shutil.copy(folder / name, data / "videos" / "00001" / f"{Path(name).stem}.mp4")
    rows = "videoid,page_dir,name\npristine_1,00001,a walk\nstatic,00001,a wall\nzero_length,00001,nothing\nmissing,00001,gone\n"
    (tmp_path / "webvid.csv").write_text(rows)
    config_path = write_config(tmp_path / "c.yaml")
    assert run_cli(str(tmp_path / "webvid.csv"), "--data-dir", str(data), "-o", str(tmp_path / "out"),
                   "--config", str(config_path), "--no-progress") == 0
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv").set_index("clip_id")
    assert manifest.loc["00001/missing.mp4", "failure_reason"] == "missing"
    assert manifest.loc["00001/static.mp4", "drop_reasons"].startswith("motion:static")
    curated = pd.read_csv(tmp_path / "out" / "curated.csv", dtype=str)
    assert curated.to_dict("records") == [{"videoid": "pristine_1", "page_dir": "00001", "name": "a walk"}]


def test_cli_refuses_to_clobber_and_reports_config_errors(collection, tmp_path: Path):
    folder, _ = collection
    config_path = write_config(tmp_path / "c.yaml", {"stages": ["motion"]})
    out = tmp_path / "out"
    assert run_cli(str(folder), "-o", str(out), "--config", str(config_path), "--no-progress") == 0
    with pytest.raises(RunStateError, match="--resume"):
        run_cli(str(folder), "-o", str(out), "--config", str(config_path), "--no-progress")
    changed = write_config(tmp_path / "changed.yaml", {"stages": ["motion"], "probe": {"sample_fps": 4}})
    with pytest.raises(ConfigError, match="differ"):
        run_cli(str(folder), "-o", str(out), "--config", str(changed), "--resume", "--no-progress")
    # Thresholds may change on resume: decisions are re-made from stored measurements, nothing re-measured.
    strict = write_config(tmp_path / "strict.yaml", {"stages": ["motion"], "motion": {"static_max": 0.02, "min_smoothness": 0.999}})
    assert run_cli(str(folder), "-o", str(out), "--config", str(strict), "--resume", "--no-progress") == 0
    manifest = pd.read_csv(out / "manifest.csv")
    assert manifest["drop_reasons"].fillna("").str.contains("motion:smoothness").sum() >= 5
    with pytest.raises(ConfigError, match="unknown key"):
        run_cli(str(folder), "-o", str(tmp_path / "o2"), "--config", str(write_config(tmp_path / "bad.yaml", {"colour": 1})))


_CLI = (
    "import argparse, sys\n"
    "from hummingbird_t2v.curation import cli\n"
    "p = argparse.ArgumentParser(prog='hummingbird'); cli.add_parser(p.add_subparsers())\n"
    "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))\n"
)


def _comparable(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).drop(columns=["measure_seconds"]).sort_values("clip_id").reset_index(drop=True)


def test_kill_and_resume_processes_every_clip_exactly_once(collection, tmp_path: Path):
    folder, _ = collection
    big = tmp_path / "big"
    big.mkdir()
    sources = [p for p in sorted(folder.iterdir()) if p.suffix == ".mp4" and p.stat().st_size > 1000]
    for copy in range(5):
        for source in sources:
            shutil.copy(source, big / f"{copy}_{source.name}")
    config_path = write_config(tmp_path / "c.yaml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-c", _CLI, "curate", str(big), "--config", str(config_path), "--no-progress"]

    out = tmp_path / "interrupted"
    process = subprocess.Popen([*command, "-o", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    journal = out / ".curate" / "measure.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 8:
            break
        if process.poll() is not None:
            pytest.fail(f"run ended before it could be killed: {process.stderr.read().decode()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    total = len(list(big.iterdir()))
    done_before = journal.read_bytes().count(b"\n")
    assert 0 < done_before < total, "the kill must land mid-run"
    assert not (out / "manifest.parquet").exists()

    resumed = subprocess.run([*command, "-o", str(out), "--resume"], env=env, capture_output=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"measured {total - done_before} now" in resumed.stdout.decode()
    reference = subprocess.run(
        [*command, "-o", str(tmp_path / "reference")], env=env, capture_output=True, timeout=300, check=False
    )
    assert reference.returncode == 0, reference.stderr.decode()

    final = _comparable(out / "manifest.parquet")
    assert len(final) == total and final["clip_id"].is_unique
    pd.testing.assert_frame_equal(final, _comparable(tmp_path / "reference" / "manifest.parquet"))
