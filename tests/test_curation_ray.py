"""The Ray Data engine on the defect collection: same decisions as the local engine."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from curation_helpers import TEST_CONFIG, check_outcomes, make_defect_collection

from hummingbird_t2v.curation.config import config_from_dict
from hummingbird_t2v.curation.pipeline import run_curation

pytest.importorskip("ray.data")


def test_defect_collection_ray_engine_matches_local(tmp_path: Path):
    folder = tmp_path / "clips"
    expected = make_defect_collection(folder)
    # Small windows force several Ray datasets, as a large collection would.
    ray_engine = {"kind": "ray", "ray_num_cpus": 2, "ray_object_store_mb": 96, "window": 7}
    summary = run_curation(folder, tmp_path / "ray", config_from_dict({**TEST_CONFIG, "engine": ray_engine}), show_progress=False)
    assert summary.measured_now == len(expected)
    on_ray = pd.read_parquet(tmp_path / "ray" / "manifest.parquet")
    check_outcomes(on_ray, expected)

    run_curation(folder, tmp_path / "local", config_from_dict(TEST_CONFIG), show_progress=False)
    local = pd.read_parquet(tmp_path / "local" / "manifest.parquet")
    pd.testing.assert_frame_equal(on_ray.drop(columns=["measure_seconds"]), local.drop(columns=["measure_seconds"]))

    import ray

    assert not ray.is_initialized(), "the engine shuts down the Ray it started"
