"""Running an aiohttp app for a fake server on its own event loop and thread,
so synchronous tests (and subprocesses, over 127.0.0.1) can talk to it."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from aiohttp import web


class BackgroundServer(ABC):
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @abstractmethod
    def build_app(self) -> web.Application:
        """The fake's routes."""

    async def on_started(self) -> None:  # noqa: B027 - a hook a fake may leave empty
        """Hook: runs on the server's loop once it listens."""

    async def on_stopping(self) -> None:  # noqa: B027 - a hook a fake may leave empty
        """Hook: runs on the server's loop before it stops listening."""

    def start(self):
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True,
                                        name=type(self).__name__)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._runner = web.AppRunner(self.build_app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the real port when 0 was asked
        await self.on_started()

    def stop(self) -> None:
        """Stop listening: connections are refused from now on."""
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    async def _close(self) -> None:
        await self.on_stopping()
        await self._runner.cleanup()

    def call(self, coroutine: Callable[[], Awaitable[object]]) -> object:
        """Run a coroutine on the server's loop from another thread and wait for it."""
        return asyncio.run_coroutine_threadsafe(coroutine(), self._loop).result(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
