"""The Ollama client: version, tags, ps, load (an empty generate with keep_alive),
unload (keep_alive 0), waiting until unloaded models have really left VRAM, and
text generation (`generate`, `chat`; one answer, never streamed) for prompts.

Ollama answers an unload at once and evicts afterwards, so `wait_released`
polls `/api/ps` (and free VRAM, where NVML is there) with an injected clock.
It never decides what to unload: that is the scheduler's and the swap's job.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import httpx

from zmm.backends.net import one_line
from zmm.backends.net import reason as _reason
from zmm.errors import NotFound, OllamaError, OllamaUnavailable

__all__ = ["LoadedModel", "LocalModel", "OllamaClient", "OllamaError", "ReleaseResult",
           "TextAnswer", "canonical_name", "normalize_keep_alive"]

# keep_alive -1 is stored as Go's largest duration (~292 years): /api/ps shows ~2318.
_FOREVER_AFTER_YEAR = 2200
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int
    size_vram: int  # < size: partly in system RAM
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
    still_loaded: list[str]  # the caller's names Ollama still lists
    waited_s: float
    free_bytes: int | None = None  # the last VRAM reading, when one was asked for


@dataclass(frozen=True)
class TextAnswer:
    text: str  # `response` (generate) or `message.content` (chat), whole
    model: str
    done_reason: str | None  # stop | length | ...
    thinking: str | None = None  # what a thinking model reasoned, apart from the answer
    seconds: float | None = None  # Ollama's total_duration


def canonical_name(name: str) -> str:
    """The name /api/ps lists for `name`: an untagged model means its `:latest`."""
    tail = name.rsplit("/", 1)[-1]  # a registry host may carry a :port
    return name if ":" in tail else f"{name}:latest"


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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, *, timeout: float | None = None,
              **kwargs: Any) -> dict[str, Any]:
        wait = self.timeout if timeout is None else timeout
        try:
            response = self._http.request(method, path, timeout=wait, **kwargs)
        except httpx.TransportError as exc:  # refused, DNS, timeouts, dropped connections
            raise OllamaUnavailable(self.base_url, _reason(exc, wait)) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("error") if isinstance(body, dict) else None
        if response.is_success:
            if not isinstance(body, dict):
                raise OllamaError(response.status_code, f"unreadable answer to {method} {path}: "
                                  f"{_excerpt(response.text)}", hint=self._hint())
            return body
        if response.status_code == 404 and isinstance(detail, str):
            raise NotFound(detail, hint="`ollama list` shows the models this server has")
        if isinstance(detail, str):
            raise OllamaError(response.status_code, detail)
        raise OllamaError(response.status_code, f"{method} {path}: {_excerpt(response.text)}",
                          hint=self._hint())

    def _hint(self) -> str:
        return f"is {self.base_url} an Ollama server? (ollama.url)"

    def version(self) -> str:
        return str(self._call("GET", "/api/version").get("version", "unknown"))

    def tags(self) -> list[LocalModel]:
        models = []
        for entry in _entries(self._call("GET", "/api/tags")):
            details = entry["details"] if isinstance(entry.get("details"), dict) else {}
            models.append(LocalModel(_name(entry), _int(entry.get("size")),
                                     entry.get("modified_at"), details.get("parameter_size"),
                                     details.get("quantization_level")))
        return models

    def ps(self) -> list[LoadedModel]:
        return [LoadedModel(_name(entry), _int(entry.get("size")), _int(entry.get("size_vram")),
                            entry.get("expires_at"))
                for entry in _entries(self._call("GET", "/api/ps"))]

    def load(self, model: str, keep_alive: str | float | None = None) -> None:
        """Preload: an empty generate, answered once the model is in memory.
        `keep_alive` goes to Ollama as given (number = seconds, string = Go
        duration); Ollama's 400 for a bad one becomes OllamaError."""
        body: dict[str, Any] = {"model": model, "stream": False}
        if keep_alive is not None:
            body["keep_alive"] = keep_alive
        self._call("POST", "/api/generate", json=body)

    def unload(self, model: str) -> bool:
        """Ask Ollama to evict `model`; False if it is unknown (already gone).
        Ollama answers before the memory is free: see `wait_released`."""
        try:
            self._call("POST", "/api/generate", json={"model": model, "keep_alive": 0,
                                                       "stream": False})
        except NotFound:
            return False
        return True

    def generate(self, model: str, prompt: str, *, system: str | None = None,
                 options: dict[str, Any] | None = None, keep_alive: str | float | None = None,
                 timeout: float | None = None) -> TextAnswer:
        """One completion from POST /api/generate, asked with "stream": false (the
        server streams NDJSON by default). `timeout` covers loading the model too."""
        body = _text_body(model, options, keep_alive, prompt=prompt)
        if system is not None:
            body["system"] = system
        answer = self._call("POST", "/api/generate", json=body, timeout=timeout)
        return _text_answer(answer, model, str(answer.get("response") or ""))

    def chat(self, model: str, messages: list[dict[str, str]], *,
             options: dict[str, Any] | None = None, keep_alive: str | float | None = None,
             timeout: float | None = None) -> TextAnswer:
        """The assistant's reply from POST /api/chat (`messages`: role + content)."""
        body = _text_body(model, options, keep_alive, messages=messages)
        answer = self._call("POST", "/api/chat", json=body, timeout=timeout)
        message = answer.get("message")
        if not isinstance(message, dict):
            message = {}
        return _text_answer(answer, model, str(message.get("content") or ""),
                            message.get("thinking"))

    def wait_released(self, models: list[str], *, timeout: float, poll: float = 0.25,
                      vram_free: Callable[[], int | None] | None = None,
                      need_bytes: int = 0) -> ReleaseResult:
        """Poll until none of `models` is in /api/ps and, when `vram_free` gives a
        reading, at least `need_bytes` are free. Never raises on a timeout: the
        result says what is still there. OllamaUnavailable while polling propagates."""
        start = self.clock()
        while True:
            listed = {canonical_name(m.name) for m in self.ps()}
            still = [name for name in models if canonical_name(name) in listed]
            free = vram_free() if vram_free is not None else None
            waited = self.clock() - start
            if not still and (free is None or free >= need_bytes):
                return ReleaseResult(True, [], waited, free)
            if waited >= timeout:
                return ReleaseResult(False, still, waited, free)
            self.sleep(max(0.0, min(poll, timeout - waited)))


def normalize_keep_alive(expires_at: str | None, *, default: str | float = "10m",
                         now: float | None = None) -> str | int | float:
    """The keep_alive that gives a reloaded model the time it had left: whole
    seconds as a Go duration ("583s"), -1 for "forever", else `default` (when
    unknown, unparseable or already past). A unit-less numeric `default`
    ("3600") becomes a number, since Ollama refuses such strings."""
    fallback = _as_keep_alive(default)
    expires = _parse_time(expires_at) if expires_at else None
    if expires is None:
        return fallback
    if expires.year >= _FOREVER_AFTER_YEAR:
        return -1
    left = expires.timestamp() - (time.time() if now is None else now)
    return f"{int(left)}s" if left >= 1 else fallback


def _text_body(model: str, options: dict[str, Any] | None, keep_alive: str | float | None,
               **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, **fields, "stream": False}
    if options:
        body["options"] = options
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    return body


def _text_answer(answer: dict[str, Any], model: str, text: str,
                 thinking: Any = None) -> TextAnswer:
    thought = thinking if thinking is not None else answer.get("thinking")
    total = answer.get("total_duration")
    return TextAnswer(text=text, model=str(answer.get("model") or model),
                      done_reason=answer.get("done_reason"),
                      thinking=str(thought) if thought else None,
                      seconds=total / 1e9 if isinstance(total, int | float) else None)


def _as_keep_alive(value: str | float) -> str | int | float:
    if isinstance(value, str) and _PLAIN_NUMBER.match(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() else number
    return value


def _parse_time(text: str) -> datetime | None:
    """Go's RFC 3339 with up to nine fractional digits; Python takes six."""
    text = text.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:
        digits = rest[:len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{(digits[:6] or '0').ljust(6, '0')}{rest[len(digits):]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None  # a naive time is not Ollama's


def _entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    models = body.get("models")
    if not isinstance(models, list):
        return []
    return [m for m in models if isinstance(m, dict) and _name(m)]


def _name(entry: dict[str, Any]) -> str:
    return str(entry.get("name") or entry.get("model") or "")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _excerpt(text: str, limit: int = 160) -> str:
    return one_line(text, limit) or "(empty body)"
