"""Resolving --weights arguments: local paths, hub ids, and offline / failed downloads."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

from hummingbird_t2v.checkpoints.hub import looks_like_hub_id, resolve_checkpoint
from hummingbird_t2v.errors import CheckpointError

UNCACHED_ID = "hummingbird-t2v-tests/surely-not-cached-anywhere"


@pytest.fixture
def online(monkeypatch):
    """Pretend the hub is allowed; the download functions themselves are replaced in each test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_existing_local_paths_are_returned(tmp_path):
    weights = tmp_path / "model.ckpt"
    weights.write_bytes(b"x")
    assert resolve_checkpoint(str(weights)) == weights
    assert resolve_checkpoint(str(tmp_path)) == tmp_path
    assert resolve_checkpoint(str(tmp_path), filename="model.ckpt") == weights
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(str(tmp_path), filename="other.ckpt")


def test_missing_local_paths_say_no_such_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("weights/model.ckpt", "./org/name", "missing.safetensors", str(tmp_path / "gone" / "x.pt"), "a/b/c"):
        with pytest.raises(CheckpointError, match="no such file") as error:
            resolve_checkpoint(text)
        assert "\n" not in str(error.value)


def test_hub_id_recognition():
    assert looks_like_hub_id("amd/AMD-Hummingbird-T2V")
    assert looks_like_hub_id("org/model.v2")
    for text in ("model.ckpt", "weights/model.ckpt", "./org/name", "/org/name", "a/b/c", "org/", "~/x", "org\\name"):
        assert not looks_like_hub_id(text), text


def test_offline_hub_id_fails_with_one_line_telling_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read at call time, not only at huggingface_hub import
    for filename in (None, "07B_merged_all.pt"):
        with pytest.raises(CheckpointError) as error:
            resolve_checkpoint(UNCACHED_ID, filename=filename)
        message = str(error.value)
        assert "\n" not in message
        assert UNCACHED_ID in message
        assert "HF_HUB_OFFLINE" in message and "local path" in message


def test_network_failure_is_reported_as_unreachable(online, monkeypatch):
    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the hub and the file is not cached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(CheckpointError, match="cannot be reached.*local path"):
        resolve_checkpoint(UNCACHED_ID)


def test_unknown_repository(online, monkeypatch):
    def not_found(*args, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # its __init__ wants an HTTP response
        Exception.__init__(error, "404")
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    with pytest.raises(CheckpointError, match="no hub repository"):
        resolve_checkpoint(UNCACHED_ID, filename="model.safetensors")


def test_successful_download_returns_the_local_file(online, monkeypatch, tmp_path):
    downloaded = tmp_path / "cache" / "model.safetensors"
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("local_files_only")))
        return str(downloaded)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    assert resolve_checkpoint("org/name", filename="model.safetensors") == Path(downloaded)
    assert calls == [("org/name", "model.safetensors", False)]
