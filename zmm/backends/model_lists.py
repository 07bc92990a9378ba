"""The ComfyUI server's model folder lists (`GET /models/<folder>`) for the
enqueue path: stdlib urllib with a short timeout, so `zmm generate --no-wait`
stays light. None means the server did not answer (the worker checks later).
urllib's HTTP client is imported only once a connection to the server opens:
where nothing listens, the answer is None without it.
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import quote, urlsplit

TIMEOUT_S = 2.0
_LISTED = 12  # names listed in an error line before "and N more"


def folder_files(base_url: str, folder: str, timeout: float = TIMEOUT_S) -> list[str] | None:
    """The file names in one model folder; None when the server cannot be asked."""
    if not _may_answer(base_url, timeout):
        return None
    import urllib.error
    import urllib.request

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


def _may_answer(base_url: str, timeout: float) -> bool:
    """False when a connection to the server's port is refused or times out. Through
    a proxy ($http_proxy or $https_proxy, as urllib reads them) the port says nothing."""
    parts = urlsplit(base_url)
    proxy = f"{parts.scheme}_proxy"
    if os.environ.get(proxy) or os.environ.get(proxy.upper()):
        return True
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            return True
    except ValueError:  # a malformed URL: urllib gives its own answer
        return True
    except OSError:
        return False


def listing(names: list[str]) -> str:
    if not names:
        return "none at all"
    ordered = sorted(names)
    shown = ", ".join(ordered[:_LISTED])
    return shown + (f" and {len(ordered) - _LISTED} more" if len(ordered) > _LISTED else "")
