"""A fake Ollama server (aiohttp on a background thread, 127.0.0.1 port 0)
following docs/ollama-protocol.md: a load answers once loaded, an unload
answers at once and evicts later, keep_alive parsed like api.Duration, 400 for a
bad body, 404 for unknown models, a model stuck in "Stopping...", 503 when busy.
Loaded models hold VRAM in the shared ledger (partly, if it is full). A prompt
or messages get a model's answer (tests/fakes/ollama_text.py), streamed or not."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.fakes import ollama_text
from tests.fakes.server import BackgroundServer
from tests.fakes.vram import GIB, VramLedger

RUNNER_PID = 4242  # the pretend `ollama runner` holding every model's memory
RUNNER_NAME = "ollama_llama_server"
FOREVER = datetime(2318, 1, 1, tzinfo=UTC)  # how Go prints now + MaxInt64 ns
DIGEST = "a80c4f17acd5" + "0" * 52
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_NUMBER = re.compile(r"\d+\.?\d*|\.\d+")
_UNIT = re.compile(r"[^0-9.]*")


def go_duration(text: str) -> float:
    """Seconds, as Go's time.ParseDuration reads `text`; ValueError with Go's message."""
    quoted, rest, sign = f'"{text}"', text, 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total, position = 0.0, 0
    while position < len(rest):
        number = _NUMBER.match(rest, position)
        if number is None:
            raise ValueError(f"time: invalid duration {quoted}")
        unit = _UNIT.match(rest, number.end()).group(0)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(number.group(0)) * _UNITS[unit]
        position = number.end() + len(unit)
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """Seconds (None = forever), as api.Duration.UnmarshalJSON reads a JSON value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        go_type = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}
        name = go_type.get(type(value), type(value).__name__)
        raise ValueError(f"Unsupported type: '{name}'")  # noqa: TRY004 - one error kind: a 400
    seconds = float(value) if not isinstance(value, str) else go_duration(value)
    return None if seconds < 0 else seconds


def go_time(epoch: float | None) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed, as Go marshals a time."""
    moment = FOREVER if epoch is None else datetime.fromtimestamp(epoch, UTC)
    fraction = f"{moment.microsecond:06d}000".rstrip("0")
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + "Z"


class FakeOllama(BackgroundServer):
    def __init__(self, *, models: dict[str, int] | None = None, ledger: VramLedger | None = None,
                 load_latency: float = 0.0, evict_delay: float = 0.0,
                 default_keep_alive: float = 300, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.models = dict(models or {"llama3.2:latest": 10 * GIB})  # name -> bytes
        self.ledger = ledger
        self.load_latency, self.evict_delay = load_latency, evict_delay
        self.default_keep_alive = default_keep_alive  # OLLAMA_KEEP_ALIVE, seconds
        # Listed in /api/ps: name -> expiry (epoch seconds; None = forever).
        self.loaded: dict[str, float | None] = {}
        self.size_vram: dict[str, int] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (path, method, JSON body or {})
        self._stopping: dict[str, int] = {}  # name -> unload ticket: listed until evicted
        self._tickets = itertools.count(1)
        self._stuck: set[str] = set()
        self._busy = False
        self.reply: ollama_text.Reply = ollama_text.default_reply  # what the models answer
        self.text_latency = 0.0  # seconds a generation takes (after loading)
        self.thinking_models: set[str] = set()  # the ones that take "think": true
        self._crashed = False

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._log])
        app.router.add_get("/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.generate)
        app.router.add_post("/api/show", self.show)
        return app

    # -- knobs (callable from the test's thread) ---------------------------------

    def stuck_stopping(self, name: str, on: bool = True) -> None:
        """`on`: an unload of `name` answers, but the model stays listed and keeps its
        memory ("Stopping...", ollama#7606). `off`: a pending unload completes."""
        if on:
            self._stuck.add(name)
            return
        self._stuck.discard(name)
        if name in self._stopping:
            self._on_loop(self._finish_unload, name, self._stopping[name])

    def busy_503(self, on: bool = True) -> None:
        """Loads and generations get 503 (OLLAMA_MAX_QUEUE exceeded); unloads still work."""
        self._busy = on

    def runner_crash(self, on: bool = True) -> None:
        """Generations get 500 "llama runner process has terminated" (loads and
        unloads still work)."""
        self._crashed = on

    def preload(self, name: str, keep_alive: float | None = 300) -> None:
        """Put a model in memory directly (as if a chat had loaded it)."""
        self._on_loop(self._load, name, keep_alive)

    def _on_loop(self, function: Any, *args: Any) -> None:
        """Run a state change on the server's loop (its timers live there) and wait."""
        if self._loop is None or threading.get_ident() == self._thread.ident:
            function(*args)
            return
        asyncio.run_coroutine_threadsafe(self._run(function, *args), self._loop).result(10)

    @staticmethod
    async def _run(function: Any, *args: Any) -> None:
        function(*args)

    # -- model lifecycle (on the server's loop) ----------------------------------

    def _load(self, name: str, seconds: float | None) -> None:
        if name not in self.loaded:
            self.size_vram[name] = self._allocate(name)
        self._stopping.pop(name, None)  # a load revives a model on its way out
        self.loaded[name] = None if seconds is None else time.time() + seconds
        if seconds is not None and self._loop is not None:
            self._loop.call_later(seconds, self._expire)

    def _allocate(self, name: str) -> int:
        """Bytes put in VRAM; what does not fit stays in system RAM (size_vram < size)."""
        size = self.models[name]
        if self.ledger is None:
            return size
        owner = f"ollama:{name}"
        if self.ledger.allocate(owner, size, pid=RUNNER_PID, process_name=RUNNER_NAME):
            return size
        part = min(size, max(0, self.ledger.free))
        if part and self.ledger.allocate(owner, part, pid=RUNNER_PID, process_name=RUNNER_NAME):
            return part
        return 0

    def _begin_unload(self, name: str) -> None:
        if name not in self.loaded:
            return  # Ollama answers "unload" for a model that is not loaded, too
        ticket = next(self._tickets)
        self._stopping[name] = ticket
        self.loaded[name] = time.time()  # expired: `ollama ps` shows "Stopping..."
        self._loop.call_later(self.evict_delay, self._finish_unload, name, ticket)

    def _finish_unload(self, name: str, ticket: int) -> None:
        if self._stopping.get(name) != ticket or name in self._stuck:
            return  # reloaded meanwhile, or hanging in "Stopping..."
        self._stopping.pop(name, None)
        self.loaded.pop(name, None)
        self.size_vram.pop(name, None)
        if self.ledger is not None:
            self.ledger.release(f"ollama:{name}")

    def _expire(self) -> None:
        now = time.time()
        for name, expiry in list(self.loaded.items()):
            if expiry is not None and expiry <= now and name not in self._stopping:
                self._stopping[name] = ticket = next(self._tickets)
                self._finish_unload(name, ticket)

    def _resolve(self, name: str) -> str | None:
        if name in self.models:
            return name
        tagged = f"{name}:latest"
        return tagged if ":" not in name and tagged in self.models else None

    # -- endpoints ------------------------------------------------------------------

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body: Any = {}
        if request.can_read_body:
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = {}  # the handler answers 400; the log stays easy to filter
        self.requests.append((request.path, request.method, body))
        return await handler(request)

    async def root(self, _request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    def _details(self) -> dict[str, Any]:
        return {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}

    async def tags(self, _request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": name, "model": name, "modified_at": "2026-10-01T10:00:00.123456789Z",
             "size": size, "digest": DIGEST, "details": self._details()}
            for name, size in self.models.items()]})

    async def ps(self, _request: web.Request) -> web.Response:
        self._expire()
        return web.json_response({"models": [
            {"name": name, "model": name, "size": self.models[name], "digest": DIGEST,
             "details": self._details(), "expires_at": go_time(expiry),
             "size_vram": self.size_vram.get(name, 0), "context_length": 4096}
            for name, expiry in self.loaded.items()]})

    async def show(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        asked = body.get("model") or body.get("name") or ""
        if self._resolve(asked) is None:
            return _error(404, f"model '{asked}' not found")
        return web.json_response({"modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
                                  "details": self._details(), "model_info": {},
                                  "capabilities": ["completion"]})

    async def generate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        # The order is Ollama's: binding the body (keep_alive) -> the model -> the unload
        # branch -> the scheduler (where a full queue gives 503).
        try:
            seconds = (self.default_keep_alive if body.get("keep_alive") is None
                       else parse_keep_alive(body["keep_alive"]))
        except ValueError as exc:
            return _error(400, str(exc))
        wrong = ollama_text.bad_fields(request.path, body) if "messages" in body or \
            request.path.endswith("/generate") else None
        if wrong is not None:
            return _error(400, wrong)
        asked = str(body.get("model") or "")
        name = self._resolve(asked)
        if name is None:
            return _error(404, f"model '{asked}' not found")
        empty = not body.get("prompt") and not body.get("messages")
        if empty and seconds == 0:
            self._begin_unload(name)
            return web.json_response(self._answer(request, name, "unload"))
        if body.get("think") and not empty and name not in self.thinking_models:
            return _error(400, f'"{asked}" does not support thinking')
        if self._busy:
            return _error(503, "server busy, please try again.  maximum pending requests exceeded")
        load_s = self.load_latency if name not in self.loaded else 0.0
        if load_s:
            await asyncio.sleep(load_s)
        self._load(name, seconds)
        if empty:
            if seconds == 0:
                self._begin_unload(name)
            return web.json_response(self._answer(request, name, "load"))
        return await self._generate(request, body, name, seconds, load_s)

    async def _generate(self, request: web.Request, body: dict[str, Any], name: str,
                        seconds: float | None, load_s: float) -> web.StreamResponse:
        if self._crashed:
            return _error(500, "llama runner process has terminated: exit status 2")
        if self.text_latency:
            await asyncio.sleep(self.text_latency)
        text = self.reply(body) if callable(self.reply) else self.reply
        try:
            return await ollama_text.answer(request, body, name, text, load_s=load_s)
        finally:
            if seconds == 0:  # a real generation with keep_alive 0 unloads after answering
                self._begin_unload(name)

    def _answer(self, request: web.Request, name: str, reason: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"model": name, "created_at": go_time(time.time()), "done": True,
                                  "done_reason": reason}
        if request.path.endswith("/chat"):
            answer["message"] = {"role": "assistant", "content": ""}
        else:
            answer["response"] = ""
        return answer


def _error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await request.read()
    if not raw:
        return _error(400, "missing request body")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return _error(400, f"invalid character in request body: {exc}")
    return body if isinstance(body, dict) else _error(400, "json: cannot unmarshal into a request")
