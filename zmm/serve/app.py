"""Wiring `zmm serve`: one Starlette app with the web page, the JSON API, the
OpenAI-compatible API and the MCP server at /mcp (streamable HTTP), behind the
body cap and the token check, with errors in one shape; and running it under
uvicorn. CORS stays off: no cross-origin headers are ever sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zmm.config import Config
from zmm.errors import ZmmError
from zmm.serve import auth, guard, jobs_api, mcp_tools, openai_api, web
from zmm.serve.core import Service


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: "no such path", 405: "method not allowed"}.get(status, "request refused")
    return guard.error_response(status, message, "invalid_request_error")


def build(settings: Config) -> Starlette:
    from mcp.server.transport_security import TransportSecuritySettings

    service = Service(settings)
    tokens = auth.Tokens(service)
    mcp = mcp_tools.build(service, principal_of=lambda ctx: tokens.from_headers(ctx.headers or {}))
    # Every /mcp request has passed the token check already, so a rebound DNS name
    # gains nothing; the Host header is left to the reverse proxy.
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(app):
            try:
                yield
            finally:
                service.close()

    routes: list[Any] = [Route("/healthz", healthz, methods=["GET"]),
                         *jobs_api.JobsApi(service).routes(),
                         *openai_api.OpenAIImages(service).routes(),
                         *web.Pages(service).routes(),
                         *mcp_app.routes]
    return Starlette(
        routes=routes,
        middleware=[Middleware(guard.BodyCap), Middleware(auth.RequireToken, tokens=tokens)],
        exception_handlers={HTTPException: http_error, guard.ApiError: guard.handle,
                            ZmmError: guard.handle, Exception: guard.handle},
        lifespan=lifespan)


def run(settings: Config, *, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(build(settings), host=host, port=port, log_level="warning",
                server_header=False, date_header=True, timeout_graceful_shutdown=5)
