"""What both cloud providers share about HTTP: one httpx client per provider
(timeouts from config, an injectable transport), the call that turns network
failures into retryable ProviderErrors, and reading Retry-After.

Keys go only into the Authorization header; no message built here quotes a
request, so a key can never reach a log line, an event or an error.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

import zmm
from zmm.net import one_line, reason
from zmm.providers import ProviderError

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


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
