"""A fake Ollama server (aiohttp on a background thread, 127.0.0.1 port 0)
following shared/protocols/ollama.md: load answers after loading, unload
answers at once and evicts later, keep_alive parsing, 404 for unknown models,
a model stuck in "Stopping...", 503 when busy. Loaded models hold VRAM in the
shared ledger."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timezone
from typing import Any

from aiohttp import web

from tests.fakes.server import BackgroundServer
from tests.fakes.vram import VramLedger

RUNNER_PID = 4242
_GO_DURATION = re.compile(r"^(-?)((?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_keep_alive(value: Any) -> float | None:
    """Seconds (None = forever), as Ollama's api.Duration parses it; ValueError if bad."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return None if value < 0 else float(value)
    text = str(value)
    if text == "0":
        return 0.0
    match = _GO_DURATION.match(text)
    if not match:
        raise ValueError(f'time: missing unit in duration "{text}"')
    total = sum(float(n) * _UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)",
                                                              match.group(2)))
    return None if match.group(1) else total


class FakeOllama(BackgroundServer):
    def __init__(self, *, models: dict[str, int] | None = None, ledger: VramLedger | None = None,
                 load_latency: float = 0.0, evict_delay: float = 0.0, default_keep_alive: float = 300,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.models = dict(models or {"llama3.2:latest": 10 * 1024**3})
        self.ledger = ledger
        self.load_latency, self.evict_delay = load_latency, evict_delay
        self.default_keep_alive = default_keep_alive
        self.loaded: dict[str, float | None] = {}  # name -> expiry (epoch) or None (forever)
        self.requests: list[tuple[str, str, Any]] = []
        self._stuck: set[str] = set()
        self._busy = False

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.root)
        app.router.add_get("/api/version", self.version)
        app.router.add_get("/api/tags", self.tags)
        app.router.add_get("/api/ps", self.ps)
        app.router.add_post("/api/generate", self.generate)
        app.router.add_post("/api/chat", self.generate)
        app.router.add_post("/api/show", self.show)
        return app

    # knobs
    def stuck_stopping(self, name: str, on: bool = True) -> None:
        (self._stuck.add if on else self._stuck.discard)(name)

    def busy_503(self, on: bool = True) -> None:
        self._busy = on

    def preload(self, name: str, keep_alive: float | None = 300) -> None:
        """Put a model in memory directly (as if a chat had loaded it)."""
        self._hold(name)
        self.loaded[name] = None if keep_alive is None else time.time() + keep_alive

    # helpers
    def _hold(self, name: str) -> None:
        if self.ledger is not None:
            self.ledger.allocate(f"ollama:{name}", self.models[name], pid=RUNNER_PID,
                                 process_name="ollama_llama_server")

    def _evict(self, name: str) -> None:
        if name in self._stuck:
            return  # "Stopping..." forever: listed, memory held
        self.loaded.pop(name, None)
        if self.ledger is not None:
            self.ledger.release(f"ollama:{name}")

    def _expire(self) -> None:
        now = time.time()
        for name, expiry in list(self.loaded.items()):
            if expiry is not None and expiry <= now:
                self._evict(name)

    def _resolve(self, name: str) -> str | None:
        if name in self.models:
            return name
        tagged = f"{name}:latest"
        return tagged if tagged in self.models else None

    # endpoints
    async def root(self, _request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, _request: web.Request) -> web.Response:
        return web.json_response({"version": "0.12.6"})

    async def tags(self, _request: web.Request) -> web.Response:
        return web.json_response({"models": [
            {"name": name, "model": name, "modified_at": "2026-10-01T10:00:00.000000000Z",
             "size": size, "digest": "a80c4f17acd5" + "0" * 52,
             "details": {"parent_model": "", "format": "gguf", "family": "llama",
                         "families": ["llama"], "parameter_size": "3.2B",
                         "quantization_level": "Q4_K_M"}}
            for name, size in self.models.items()]})

    async def ps(self, _request: web.Request) -> web.Response:
        self._expire()
        entries = []
        for name, expiry in self.loaded.items():
            when = datetime.fromtimestamp(expiry, timezone.utc) if expiry else \
                datetime(2318, 1, 1, tzinfo=timezone.utc)
            entries.append({"name": name, "model": name, "size": self.models[name],
                            "digest": "a80c4f17acd5" + "0" * 52, "details": {"format": "gguf"},
                            "expires_at": when.isoformat().replace("+00:00", "Z"),
                            "size_vram": self.models[name], "context_length": 4096})
        return web.json_response({"models": entries})

    async def show(self, request: web.Request) -> web.Response:
        body = await request.json()
        name = self._resolve(body.get("model") or body.get("name") or "")
        if name is None:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        return web.json_response({"modelfile": "", "details": {"format": "gguf"}, "model_info": {}})

    async def generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, "POST", body))
        if self._busy:
            return web.json_response({"error": "server busy, please try again. maximum pending "
                                      "requests exceeded"}, status=503)
        name = self._resolve(body.get("model", ""))
        if name is None:
            return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
        keep = body.get("keep_alive", self.default_keep_alive)
        try:
            seconds = parse_keep_alive(keep)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        stamp = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        base = {"model": name, "created_at": stamp, "done": True}
        if request.path.endswith("chat"):
            base["message"] = {"role": "assistant", "content": ""}
        else:
            base["response"] = ""
        if seconds == 0:
            self._loop.call_later(self.evict_delay, self._evict, name)
            return web.json_response(dict(base, done_reason="unload"))
        if name not in self.loaded and self.load_latency:
            await asyncio.sleep(self.load_latency)
        self._hold(name)
        self.loaded[name] = None if seconds is None else time.time() + seconds
        return web.json_response(dict(base, done_reason="load"))
