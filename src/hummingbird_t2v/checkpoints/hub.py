"""Turn a user's ``--weights`` argument (local path or Hugging Face hub id) into a local path."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hummingbird_t2v.errors import CheckpointError

# "org/name": exactly one slash, hub-legal characters, no leading dot (./x, ../x are local paths).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# A last part with one of these endings names a file, so "weights/model.ckpt" is a (missing) local path.
_WEIGHT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json", ".yaml")
_TRUE_VALUES = {"1", "true", "yes", "on"}


def looks_like_hub_id(text: str) -> bool:
    """True for ``org/name`` strings that can only be a hub repository id, not a file path."""
    return bool(_HUB_ID.match(text)) and not text.lower().endswith(_WEIGHT_SUFFIXES)


def resolve_checkpoint(path_or_id: str, filename: str | None = None) -> Path:
    """Local file or folder for ``path_or_id``, downloading hub ids with huggingface_hub.

    ``filename`` picks one file inside a local folder or a hub repository; without it a hub id
    downloads the whole repository snapshot and the folder is returned.
    Raises ``CheckpointError`` (one line) for missing paths and failed or offline downloads.
    """
    local = Path(path_or_id).expanduser()
    if local.exists():
        if filename is None or local.is_file():
            return local
        target = local / filename
        if not target.exists():
            raise CheckpointError(f"no such file: {target}; check the file name inside {local}")
        return target
    if not looks_like_hub_id(path_or_id):
        raise CheckpointError(
            f"no such file: {local}; pass an existing checkpoint file or folder, or a hub id like 'org/name'"
        )
    return _download(path_or_id, filename)


def hub_offline() -> bool:
    """True when the user asked huggingface_hub not to use the network.

    The environment is read at call time as well: huggingface_hub reads HF_HUB_OFFLINE only at import.
    """
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_VALUES or bool(constants.HF_HUB_OFFLINE)


def _download(repo_id: str, filename: str | None) -> Path:
    # Imported here so that plain local loading never pays for (or depends on) huggingface_hub.
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = hub_offline()
    what = f"'{filename}' from hub repository '{repo_id}'" if filename else f"hub repository '{repo_id}'"
    use_local_path = (
        "download it on a machine with access and pass the local path instead (e.g. --weights /path/to/file)"
    )
    try:
        if filename:
            return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
        return Path(snapshot_download(repo_id, local_files_only=offline))
    except LocalEntryNotFoundError:
        # huggingface_hub raises this both in offline mode and after network failures, once the
        # local cache has been checked too.
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise CheckpointError(
            f"cannot fetch {what}: {reason} and it is not in the local cache; {use_local_path}"
        ) from None
    except GatedRepoError:
        raise CheckpointError(
            f"hub repository '{repo_id}' is gated: accept its terms on huggingface.co and log in "
            f"(`hf auth login`), or {use_local_path}"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"no hub repository '{repo_id}' (or it is private); check the id, or pass a local path"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"hub repository '{repo_id}' has no such revision; pass a local path instead") from None
    except EntryNotFoundError:
        raise CheckpointError(f"{what} does not exist; check the file name, or pass a local path") from None
    except HFValidationError as error:
        raise CheckpointError(f"'{repo_id}' is not a valid hub id ({_first_line(error)}); pass a local path") from None
    except (HfHubHTTPError, OSError) as error:
        raise CheckpointError(f"cannot fetch {what} ({_first_line(error)}); {use_local_path}") from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
