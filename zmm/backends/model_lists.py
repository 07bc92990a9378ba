"""The ComfyUI server's model folder lists (`GET /models/<folder>`) for the
enqueue path: stdlib urllib with a short timeout, so `zmm generate --no-wait`
stays light. None means the server did not answer (the worker checks later).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from urllib.parse import quote

TIMEOUT_S = 2.0
_LISTED = 12  # names listed in an error line before "and N more"


def folder_files(base_url: str, folder: str, timeout: float = TIMEOUT_S) -> list[str] | None:
    """The file names in one model folder; None when the server cannot be asked."""
    url = f"{base_url.rstrip('/')}/models/{quote(folder, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = json.loads(response.read())
    except urllib.error.HTTPError:
        return None  # an older server without /models: the worker's check decides
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if not isinstance(data, list):
        return None
    return [str(name) for name in data]


def listing(names: list[str]) -> str:
    if not names:
        return "none at all"
    ordered = sorted(names)
    shown = ", ".join(ordered[:_LISTED])
    return shown + (f" and {len(ordered) - _LISTED} more" if len(ordered) > _LISTED else "")
