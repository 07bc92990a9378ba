"""What the fake cloud servers share (tests/fakes/stability.py, openai_images.py):
the request log, scripted faults consumed in order, a hang and a dropped
connection, latency that ends when the server stops, and real Pillow images.
The fakes follow docs/cloud-protocol.md field for field; where it is silent the
choice is marked "assumed"."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import secrets
from typing import Any

from aiohttp import web
from PIL import Image

from tests.fakes.server import BackgroundServer

_FAST = {"png": {"compress_level": 1}, "webp": {"lossless": True, "method": 0}}
_KEY = getattr(web, "RequestKey", lambda name, _type: name)  # aiohttp < 3.12: plain str keys
REQUEST_ID, REQUEST_LOG = _KEY("id", str), _KEY("log", dict)


@functools.lru_cache(maxsize=64)  # encoding takes tens of ms; tests ask for few variants
def render(size: tuple[int, int], fmt: str, seed: int, *, blurred: bool = False,
           transparent: bool = False) -> bytes:
    """A real image: one of 8 solid colours by seed (so seeds differ), or blurred noise."""
    mode, shade = ("RGBA" if transparent else "RGB"), seed % 8
    colour = (shade * 32, 255 - shade * 32, 128) + ((0,) if transparent else ())
    image = Image.new(mode, size, colour)
    if blurred:  # noise upscaled smoothly: a blurred solid colour would look unfiltered
        image = Image.effect_noise((size[0] // 32, size[1] // 32), 80).convert(mode).resize(
            size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, fmt.upper(), **_FAST.get(fmt, {}))
    return buffer.getvalue()


class CloudFake(BackgroundServer):
    """What both fakes share: the request log, scripted faults, hang and drop. A subclass
    gives add_routes, not_found, log_body (its part of a log entry), _unauthorized and
    _scripted (a fault's error answer)."""

    FAULTS: frozenset[str] = frozenset()

    def __init__(self, key: str, latency: float, host: str, port: int) -> None:
        super().__init__(host, port)
        self.key, self.latency = key, latency
        self.requests: list[dict[str, Any]] = []
        self._faults: list[dict[str, Any]] = []
        self._released: asyncio.Event | None = None

    def _queue(self, kind: str, times: int, **options: Any) -> None:
        if kind not in self.FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(self.FAULTS)}")
        self._faults.extend({"kind": kind, **options} for _ in range(times))

    def _next_fault(self) -> dict[str, Any] | None:
        return self._faults.pop(0) if self._faults else None

    def build_app(self) -> web.Application:
        # 10 MiB is Stability's documented body limit; aiohttp's default is 1 MiB.
        app = web.Application(middlewares=[self._log], client_max_size=10 * 1024**2)
        self.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def on_started(self) -> None:
        self._released = asyncio.Event()

    async def _delay(self) -> None:
        """`latency` seconds, cut short when the server stops (a slow answer must not
        hold up the runner's cleanup)."""
        if self.latency:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._released.wait(), self.latency)

    async def on_stopping(self) -> None:
        self._released.set()  # a hung handler must end, or the runner waits for it

    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[REQUEST_ID] = secrets.token_hex(16)
        request[REQUEST_LOG] = {"path": request.path, "method": request.method,
                         "headers": {k.lower(): v for k, v in request.headers.items()},
                         **self.log_body()}
        self.requests.append(request[REQUEST_LOG])
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.key}"

    async def _answer_fault(self, request: web.Request, fault: dict[str, Any],
                            body: Any = None) -> web.Response:
        """A hang or a drop (no answer at all), a 401, or the fault's scripted error."""
        if fault["kind"] in ("hang", "drop"):
            if fault["kind"] == "hang":
                await self._released.wait()
            if request.transport is not None:
                request.transport.close()
            return web.Response()  # never reaches the client: the connection is gone
        if fault["kind"] == "unauthorized":
            return self._unauthorized(request)
        return self._scripted(request, fault, body)

    @staticmethod
    def _fault_headers(fault: dict[str, Any]) -> dict[str, str]:
        headers = {}
        if fault.get("retry_after") is not None:
            headers["retry-after"] = f"{fault['retry_after']:g}"
        if fault.get("should_retry") is not None:
            headers["x-should-retry"] = "true" if fault["should_retry"] else "false"
        return headers
