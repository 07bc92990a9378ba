"""What every HTTP request passes through: the cap on its body, and errors in
one shape, OpenAI's `{"error": {"message", "type", "param", "code"}}`, with a
status from zmm's error classes. No stack trace reaches a client: anything
unexpected is one line in the server's log and a plain 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zmm import errors
from zmm.serve.core import Forbidden

MB = 1 << 20
BODY_CAP = 1 * MB  # a JSON request
UPLOAD_CAP = 25 * MB  # a multipart request with an image (/v1/images/edits)
UPLOAD_PATHS = ("/v1/images/edits",)
log = logging.getLogger("zmm.serve")

STATUS = [  # the first class that matches decides
    (Forbidden, 403, "permission_error"),
    (errors.InvalidInput, 400, "invalid_request_error"),
    (errors.NotFound, 404, "not_found_error"),
    (errors.Conflict, 409, "conflict_error"),
    (errors.WorkflowRejected, 400, "invalid_request_error"),
    (errors.TimedOut, 504, "timeout_error"),
    (errors.BackendUnavailable, 503, "server_error"),
]


class ApiError(Exception):
    """A request refused before it reaches a service (bad JSON, a missing token)."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.param, self.code = param, code


def error_body(message: str, kind: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, kind: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(message, kind, param, code), status_code=status,
                        headers=headers)


def from_exception(exc: BaseException) -> JSONResponse:
    """The response for an exception raised while handling a request."""
    from zmm.secrets import scrub

    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.message, exc.kind, exc.param, exc.code)
    if isinstance(exc, errors.ZmmError):
        status, kind = next(((status, kind) for cls, status, kind in STATUS
                             if isinstance(exc, cls)), (500, "server_error"))
        param = exc.field if isinstance(exc, errors.InvalidInput) else None
        return error_response(status, scrub(exc.message), kind, param)
    log.error("unexpected error: %s", type(exc).__name__, exc_info=exc)
    return error_response(500, "internal error; the server's log has the details",
                          "server_error")


async def handle(request: Request, exc: Exception) -> Response:
    return from_exception(exc)


async def json_body(request: Request) -> Any:
    """The request's JSON (400 with one line when it is not JSON)."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "body: JSON expected (the request's body does not parse)",
                       param="body") from None


class BodyTooLarge(Exception):
    pass


class BodyCap:
    """Refuses a body over its cap with 413: at once by Content-Length, else as
    the bytes arrive (a chunked upload is cut off at the cap)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = UPLOAD_CAP if scope["path"] in UPLOAD_PATHS else BODY_CAP
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > cap):
            await _too_large(cap)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge()
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if not started:
                await _too_large(cap)(scope, receive, send)


def _too_large(cap: int) -> JSONResponse:
    return error_response(413, f"body: at most {cap // MB} MB", param="body",
                          code="body_too_large")
