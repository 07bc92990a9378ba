"""Bearer tokens for `zmm serve`: creating one (shown once; the spool keeps its
SHA-256 only), listing and revoking them, and the middleware that lets a
request in only with a live token, in the Authorization header or, for the web
page, in the cookie its login form sets. `GET /healthz`, the login form and
the server's signed file links are open. A token may be limited to one requester and a priority ceiling.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from zmm.errors import InvalidInput
from zmm.jobs import parse_priority, parse_text
from zmm.serve.core import Principal, Service
from zmm.serve.guard import error_response

PREFIX = "zmm_"
COOKIE = "zmm_token"
OPEN_PATHS = ("/healthz", "/login")
SIGNED_PREFIX = "/v1/files/"  # links signed by the server (zmm.serve.openai_api)
TOUCH_EVERY_S = 60.0


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(service: Service, name: str, *, requester: str | None = None,
           max_priority: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new token and its row; the token itself is not stored anywhere."""
    name = parse_text("name", name, max_len=64, one_line=True)
    if requester is not None:
        requester = parse_text("requester", requester, max_len=64, one_line=True)
    ceiling = parse_priority(max_priority).value if max_priority is not None else None
    token = PREFIX + secrets.token_urlsafe(32)
    row = service.store().add_token("tok-" + os.urandom(4).hex(), name, digest(token),
                                    requester=requester, max_priority=ceiling)
    return token, row


def principal_of(row: dict[str, Any]) -> Principal:
    return Principal(row["name"], requester=row["requester"], max_priority=row["max_priority"])


class Tokens:
    """Looks tokens up in the spool on every request (a revoked one is refused at
    once); writes a token's last use at most once a minute."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._touched: dict[str, float] = {}

    def principal(self, token: str | None) -> Principal | None:
        if not token or not token.startswith(PREFIX) or len(token) > 200:
            return None
        row = self.service.store().live_token(digest(token))
        if row is None:
            return None
        now = time.monotonic()
        if now - self._touched.get(row["id"], -TOUCH_EVERY_S) >= TOUCH_EVERY_S:
            self._touched[row["id"]] = now
            self.service.store().touch_token(row["id"])
        return principal_of(row)

    def from_headers(self, headers: Any) -> Principal | None:
        """The principal of an `Authorization: Bearer` header or the login cookie."""
        value = headers.get("authorization") or ""
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer":
            return self.principal(token.strip())
        cookie = headers.get("cookie") or ""
        for part in cookie.split(";"):
            key, _, found = part.strip().partition("=")
            if key == COOKIE:
                return self.principal(found)
        return None


class RequireToken:
    """No token, no access: 401 (a redirect to the login form for a page)."""

    def __init__(self, app: ASGIApp, tokens: Tokens) -> None:
        self.app, self.tokens = app, tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or \
                scope["path"].startswith(SIGNED_PREFIX):
            await self.app(scope, receive, send)
            return
        import anyio.to_thread

        request = Request(scope)
        principal = await anyio.to_thread.run_sync(self.tokens.from_headers, request.headers)
        if principal is None:
            response: Response
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                response = RedirectResponse("/login", status_code=303)
            else:
                response = error_response(401, "a valid bearer token is required "
                                          "(`zmm serve token create`)", "authentication_error",
                                          code="invalid_api_key")
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def request_principal(request: Request) -> Principal:
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):
        raise InvalidInput("authorization", "a valid bearer token")
    return principal
