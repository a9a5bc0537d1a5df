"""The Hugging Face hub, reached only when it answers: model folders fetched by name, open_clip weights.

Without a network, huggingface_hub retries for about 46 s before it gives up; a short DNS probe tells first, so
a model that is not in the local cache fails in about a second, while one that is loads as usual.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from clipdex.retrieval import config
from clipdex.retrieval.errors import ClipdexError

# ORG/NAME as the hub spells repository ids (a folder on disk with that name wins: it is looked for first).
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
# What a model folder needs of a repository (Immich's also hold builds for other runtimes, not fetched).
FOLDER_PATTERNS = ["config.json", "textual/*.json", "textual/model.onnx*", "visual/*.json", "visual/model.onnx*"]


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.fullmatch(name)) and ".." not in name


def hub_resolves(host: str = config.HF_HUB_HOST, seconds: float = config.HUB_PROBE_SECONDS) -> bool:
    """True when the hub's name resolves within `seconds`; a DNS lookup can hang, so it runs aside."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


@contextmanager
def hub_access() -> Iterator[bool]:
    """huggingface_hub in offline mode while the hub can't be reached, for this load only; yields whether it is
    online. The setting is restored afterwards, so the process is left as it was found."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        yield False
        return
    if hub_resolves():
        yield True
        return
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        hub.HF_HUB_OFFLINE = False
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def hub_folder(repo_id: str) -> Path:
    """The model folder of hub repository `repo_id`: from the local Hugging Face cache, else fetched when the hub
    answers; a one-line error when neither."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=FOLDER_PATTERNS, local_files_only=True))
    except Exception:
        pass
    with hub_access() as online:
        if not online:
            raise ClipdexError(
                f"{repo_id} is not in the local Hugging Face cache and the hub cannot be reached: run once with "
                f"network, or give a model folder (--model PATH)"
            )
        try:
            return Path(snapshot_download(repo_id, allow_patterns=FOLDER_PATTERNS))
        except Exception as exc:
            raise ClipdexError(f"cannot fetch the model folder {repo_id} from the hub ({type(exc).__name__})") from None
