"""What both cloud providers share: `HttpProvider` (the key from the
environment, one httpx client with timeouts from config and an injectable
transport), the call that turns network failures into retryable
ProviderErrors, reading Retry-After, and picking the nearest allowed shape.

Keys go only into the Authorization header; no message built here quotes a
request, so a key can never reach a log line, an event or an error.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

import zmm
from zmm.backends.net import one_line, reason
from zmm.cloud.providers import ProviderError, key_from
from zmm.config import Config

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class HttpProvider:
    """A provider whose settings live in the config section named `name`."""

    name = ""

    def __init__(self, settings: Config, *, transport: Any = None,
                 environ: dict[str, str] | None = None) -> None:
        self.section = settings.section(self.name)
        self.key_env, self._key = key_from(settings, self.name, environ)
        self.path = self.section["path"]
        self.timeout_s = settings.get("cloud.timeout_s")
        self._http = client(self.section["url"], self.timeout_s, transport)

    def usable(self) -> str | None:
        return None if self._key else f"${self.key_env} is not set"

    def close(self) -> None:
        self._http.close()

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self._key}", **kwargs.pop("headers", {})}
        return send(self.name, self._http, self.timeout_s, "POST", path, headers=headers,
                    **kwargs)


def nearest(shapes: dict[str, float], width: int, height: int) -> str:
    """The name of the aspect ratio in `shapes` closest to width:height (log distance)."""
    wanted = math.log(width / height)
    return min(shapes, key=lambda name: abs(math.log(shapes[name]) - wanted))


def client(base_url: str, timeout_s: float, transport: Any = None) -> httpx.Client:
    return httpx.Client(base_url=base_url.rstrip("/"), transport=transport,
                        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
                        headers={"user-agent": f"zmm/{zmm.__version__}"},
                        follow_redirects=False)


def send(provider: str, http: httpx.Client, timeout_s: float, method: str, path: str,
         **kwargs: Any) -> httpx.Response:
    try:
        return http.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise ProviderError(provider, reason(exc, timeout_s), retry=True) from None


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (seconds form); None if absent or a date."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return max(0.0, seconds) if seconds is not None and math.isfinite(seconds) else None


def excerpt(response: httpx.Response) -> str:
    return one_line(response.text, 200) or "(empty body)"


def require_png(provider: str, data: bytes, cost_usd: float | None) -> bytes:
    from zmm.assets import PNG_SIGNATURE

    if not data.startswith(PNG_SIGNATURE):
        raise ProviderError(provider, "the answer is not a PNG image", retry=False,
                            cost_usd=cost_usd or 0.0)
    return data
