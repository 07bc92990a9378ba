"""A ComfyClient over httpx.MockTransport, for unit tests that need one exact
answer (a 5xx, a malformed body) rather than the whole fake server."""

from __future__ import annotations

import httpx

from zmm.backends.comfy import ComfyClient

URL = "http://comfy.test:8188"


def client_for(routes: dict, seen: list | None = None, **kwargs) -> ComfyClient:
    """routes: "METHOD /path" -> httpx.Response, or a callable(request) -> Response;
    any other request is a 404, as ComfyUI answers an unknown route."""

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        answer = routes.get(f"{request.method} {request.url.path}")
        if answer is None:
            return httpx.Response(404)
        return answer(request) if callable(answer) else answer

    return ComfyClient(URL, transport=httpx.MockTransport(handle), **kwargs)
