"""The fake ComfyUI's malicious mode: answers a broken or hostile server sends
(invalid or deeply nested JSON, bodies and websocket frames far larger than any
real answer, a PNG signature followed by zeros, a prompt that never ends).
Huge bodies are streamed in chunks: the fake never holds them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

KINDS = ("invalid-json", "deep-json", "huge-history", "huge-view", "huge-frame", "fake-png",
         "endless")
CHUNK = 1 << 20


@dataclass
class Malice:
    kind: str
    size: int = 300 * CHUNK  # bytes of a huge body or frame; nesting depth of deep-json
    sent: int = 0  # bytes the fake wrote (or tried to) of its huge answers


async def stream_zeros(request: web.Request, malice: Malice, head: bytes,
                       content_type: str) -> web.StreamResponse:
    """`head` then zeros (or spaces, for JSON), up to `malice.size` bytes, until
    the client stops reading."""
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    filler = (b" " if content_type == "application/json" else b"\0") * CHUNK
    try:
        await response.write(head)
        malice.sent += len(head)
        while malice.sent < malice.size:
            await response.write(filler)
            malice.sent += len(filler)
        await response.write_eof()
    except (ConnectionError, RuntimeError):
        pass  # the client hung up: what it wanted to see
    return response


async def history(request: web.Request, malice: Malice) -> web.StreamResponse | None:
    """GET /history/{id} as the malicious server answers it, or None (as usual)."""
    if malice.kind == "invalid-json":
        return web.Response(text="{'not': json", content_type="application/json")
    if malice.kind == "deep-json":
        return web.Response(text="[" * malice.size, content_type="application/json")
    if malice.kind == "huge-history":
        return await stream_zeros(request, malice, b'{"x": "', "application/json")
    return None


async def view(request: web.Request, malice: Malice) -> web.StreamResponse | None:
    if malice.kind == "huge-view":
        return await stream_zeros(request, malice, b"", "image/png")
    if malice.kind == "fake-png":
        return await stream_zeros(request, malice, PNG_SIGNATURE, "image/png")
    return None


async def on_connect(ws: web.WebSocketResponse, malice: Malice) -> None:
    if malice.kind == "huge-frame":
        malice.sent += malice.size
        try:
            await ws.send_bytes(b"\0" * malice.size)
        except (ConnectionError, RuntimeError):
            pass
