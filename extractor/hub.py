"""Where a model named by ``from_pretrained`` lives: a local folder, or a Hugging Face Hub id that
``huggingface_hub.snapshot_download`` fetches (or finds in its cache, which also works offline)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .checkpoint import CheckpointError

__all__ = ["looks_like_hub_id", "resolve_model_dir"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9]$")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` whose ``owner`` is not a local folder: ``runs/model`` with a ``runs/`` here is a
    mistyped path, not a Hub id, and gets the local error at once instead of a network round trip."""
    return bool(_HUB_ID.match(name)) and ".." not in name and not Path(name.split("/", 1)[0]).exists()


def _offline() -> bool:
    from huggingface_hub import constants

    # read at call time too: huggingface_hub reads the variable once, at import
    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def resolve_model_dir(name_or_path: str | Path, *, revision: str | None = None) -> Path:
    """The local folder of a model: ``name_or_path`` itself when it exists, else the Hub snapshot of the
    id it names (downloaded into the Hugging Face cache, or taken from there when the Hub is offline).

    Every failure is a :class:`CheckpointError` of one sentence naming the model and what to do.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if not looks_like_hub_id(name):
        return path  # read_card names the missing folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _offline()
    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=offline, library_name="kecpm"))
    except LocalEntryNotFoundError:
        if offline:
            raise CheckpointError(
                f"{name} is neither a local folder nor a cached Hub model, and the Hub is offline (HF_HUB_OFFLINE=1): "
                f"download it where the Hub is reachable (`hf download {name} --local-dir DIR`) and pass DIR"
            ) from None
        raise CheckpointError(
            f"{name} is neither a local folder nor a Hub model that could be downloaded (the Hub was unreachable "
            "and nothing is cached): check the network, or download it elsewhere and pass its folder"
        ) from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{name}: the Hub model has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise CheckpointError(
            f"{name} is neither a local folder nor a Hub model (or it is private or gated: log in with `hf auth login`)"
        ) from None
    except (HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"{name}: downloading it from the Hub failed ({exc})") from None
