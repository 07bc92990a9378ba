"""Network failures in words: the short reason a person sees when a server
zmm talks to (ComfyUI, Ollama, a cloud API, a webhook endpoint) cannot be
reached, and one-line excerpts of whatever a server answered.

Pure helpers over exceptions and text; nothing here sends a request.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import httpx

_DNS_WORDS = ("name or service", "nodename", "getaddrinfo", "name resolution", "no address")


def reason(exc: BaseException, timeout: float) -> str:
    """A short human reason for a network failure: 'connection refused', ..."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:  # httpx wraps httpcore wraps OSError
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, httpx.TimeoutException | TimeoutError) for e in chain):
        return f"timed out after {timeout:g}s"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text:
        return "connection refused"
    if any(isinstance(e, socket.gaierror) for e in chain) or any(w in text for w in _DNS_WORDS):
        return "name not resolved"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection without answering"
    return one_line(re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__,
                    120)


def one_line(text: Any, limit: int = 300) -> str:
    """`text` with its whitespace folded, cut to `limit` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"
