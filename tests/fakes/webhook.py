"""A fake webhook receiver on 127.0.0.1: records every POST (headers, raw body
bytes, arrival time) and answers from a script: `respond(status, times)`,
`hang(times)` (until `release()` or `hang_s`), `drop(times)` (close the
connection without answering); unscripted requests get `status` (204)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.server import BackgroundServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: CIMultiDict
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class FakeWebhook(BackgroundServer):
    def __init__(self, *, status: int = 204, hang_s: float = 60.0, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        super().__init__(host, port)
        self.status, self.hang_s = status, hang_s
        self.received: list[Received] = []
        self.answered = 0  # requests that got an answer (a drop counts as none)
        self._script: list[tuple[str, int, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._released: asyncio.Event | None = None

    @property
    def hook_url(self) -> str:
        return f"{self.url}/hook"

    # -- scripting (from the test's thread) -------------------------------------

    def respond(self, status: int, times: int = 1, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            self._script += [("respond", status, headers or {})] * times

    def hang(self, times: int = 1) -> None:
        with self._lock:
            self._script += [("hang", 0, {})] * times

    def drop(self, times: int = 1) -> None:
        with self._lock:
            self._script += [("drop", 0, {})] * times

    def release(self) -> None:
        """Let every hanging request (and later ones) answer with `status`."""
        async def release() -> None:
            self._released.set()

        self.call(release)

    def bodies(self) -> list[Any]:
        return [item.json() for item in list(self.received)]

    # -- the server ---------------------------------------------------------------

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        return app

    async def on_started(self) -> None:
        self._released = asyncio.Event()

    async def on_stopping(self) -> None:
        self._released.set()  # hanging handlers end, so shutdown doesn't wait on them

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        with self._lock:
            self.received.append(Received(request.path, CIMultiDict(request.headers), body,
                                          time.monotonic()))
            action, status, headers = (self._script.pop(0) if self._script
                                       else ("respond", self.status, {}))
        if action == "hang":
            try:
                await asyncio.wait_for(self._released.wait(), self.hang_s)
            except TimeoutError:
                pass
            action, status = "respond", self.status
        if action == "drop":
            request.transport.abort()
            raise asyncio.CancelledError  # nothing is sent on the aborted connection
        with self._lock:
            self.answered += 1
        return web.Response(status=status, headers=headers)
