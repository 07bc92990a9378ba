"""The Ollama client: tags, ps, load (empty generate with keep_alive), unload
(keep_alive 0) and waiting until unloaded models have really left VRAM.

Ollama answers an unload at once and evicts afterwards, so `wait_released`
polls `/api/ps` (and free VRAM, where NVML is there) with an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from zmm.errors import NotFound, OllamaUnavailable, ZmmError


class OllamaError(ZmmError):
    """Ollama answered with an error (`{"error": ...}`)."""


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int
    size_vram: int
    expires_at: str | None


@dataclass(frozen=True)
class LocalModel:
    name: str
    size: int
    modified_at: str | None
    parameter_size: str | None
    quantization: str | None


@dataclass(frozen=True)
class ReleaseResult:
    released: bool
    still_loaded: list[str]
    waited_s: float


class OllamaClient:
    def __init__(self, base_url: str = "http://127.0.0.1:11434", *,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.clock, self.sleep = clock, sleep
        self._http = httpx.Client(base_url=self.base_url, transport=transport, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            from zmm.comfy import _reason

            raise OllamaUnavailable(self.base_url, _reason(exc, self.timeout)) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        if response.status_code == 404:
            raise NotFound(f"Ollama: {body.get('error', 'not found')}")
        if response.status_code >= 400:
            raise OllamaError(f"Ollama answered {response.status_code}: {body.get('error', body)}")
        return body

    def version(self) -> str:
        return str(self._call("GET", "/api/version").get("version", "unknown"))

    def tags(self) -> list[LocalModel]:
        return [LocalModel(m["name"], int(m.get("size", 0)), m.get("modified_at"),
                           (m.get("details") or {}).get("parameter_size"),
                           (m.get("details") or {}).get("quantization_level"))
                for m in self._call("GET", "/api/tags").get("models", [])]

    def ps(self) -> list[LoadedModel]:
        return [LoadedModel(m["name"], int(m.get("size", 0)), int(m.get("size_vram", 0)),
                            m.get("expires_at"))
                for m in self._call("GET", "/api/ps").get("models", [])]

    def load(self, model: str, keep_alive: str | int | float | None = None) -> None:
        """Preload: an empty generate, answered once the model is in memory."""
        body: dict[str, Any] = {"model": model, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        self._call("POST", "/api/generate", json=body)

    def unload(self, model: str) -> bool:
        """Ask Ollama to evict `model`; False if it is unknown (already gone)."""
        try:
            self._call("POST", "/api/generate", json={"model": model, "keep_alive": 0,
                                                       "stream": False})
        except NotFound:
            return False
        return True

    def wait_released(self, models: list[str], *, timeout: float, poll: float = 0.25,
                      vram_free: Callable[[], int | None] | None = None,
                      need_bytes: int = 0) -> ReleaseResult:
        """Poll until none of `models` is in /api/ps and (if known) enough VRAM is free."""
        start = self.clock()
        while True:
            loaded = {m.name for m in self.ps()}
            still = [name for name in models if name in loaded]
            free = vram_free() if vram_free is not None else None
            if not still and (free is None or free >= need_bytes):
                return ReleaseResult(True, [], self.clock() - start)
            if self.clock() - start >= timeout:
                return ReleaseResult(False, still, self.clock() - start)
            self.sleep(poll)


def normalize_keep_alive(expires_at: str | None, *, default: str = "10m",
                         now: float | None = None) -> str | int:
    """A keep_alive that gives a reloaded model the time it had left (Go
    duration, whole seconds); `default` when unknown or already past."""
    if not expires_at:
        return default
    try:
        text = expires_at.replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Go writes nanoseconds; Python parses at most microseconds
            digits = "".join(ch for ch in rest if ch.isdigit())
            zone = rest[len(digits):]
            text = f"{head}.{digits[:6]}{zone}"
        expires = datetime.fromisoformat(text)
    except ValueError:
        return default
    if expires.year >= 2200:  # "forever" (keep_alive -1) shows as a far-future date
        return -1
    left = expires.timestamp() - (time.time() if now is None else now)
    return f"{int(left)}s" if left >= 1 else default
