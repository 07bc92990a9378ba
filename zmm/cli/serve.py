"""`zmm serve`: the HTTP front door (web page, JSON API, OpenAI-compatible
images API, MCP at /mcp), and `zmm serve token create|list|revoke`. Needs the
optional extra: pip install 'zmm[serve]'."""

from __future__ import annotations

import importlib.util
from typing import Optional

import typer

from zmm.cli.common import emit, emit_json, load_config, say
from zmm.errors import InvalidInput

app = typer.Typer(help="Serve the spool over HTTP (docs/serve.md).", invoke_without_command=True)
token_app = typer.Typer(help="Bearer tokens for `zmm serve`.", no_args_is_help=True)
app.add_typer(token_app, name="token")
EXTRA = ("starlette", "uvicorn", "mcp")


def need_extra() -> None:
    missing = [name for name in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidInput("serve", "the optional extra: pip install 'zmm[serve]' "
                           f"(missing: {', '.join(missing)})")


@app.callback()
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback by "
                             "default; put TLS in a reverse proxy)."),
    port: int = typer.Option(8787, "--port", min=0, max=65535, help="Port to listen on."),
) -> None:
    """Serve the web page, the JSON and OpenAI-compatible APIs and MCP until Ctrl-C.
    Every request but GET /healthz needs a token (`zmm serve token create`)."""
    if ctx.invoked_subcommand is not None:
        return
    need_extra()
    from zmm.serve import app as server

    settings = load_config()
    say(f"zmm serve: http://{host}:{port}/ (Ctrl-C stops)")
    server.run(settings, host=host, port=port)


def _service():
    need_extra()
    from zmm.serve.core import Service

    return Service(load_config())


@token_app.command("create")
def create(
    name: str = typer.Argument(..., help="What the token is for, e.g. open-webui."),
    requester: Optional[str] = typer.Option(None, "--requester",
                                            help="Only this requester's jobs (submit, cancel, "
                                            "retry); default: any."),
    max_priority: Optional[str] = typer.Option(None, "--max-priority",
                                               help="The highest priority it may ask for: "
                                               "CRITICAL | HIGH | MEDIUM | LOW."),
    as_json: bool = typer.Option(False, "--json", help="Print the token and its row as JSON."),
) -> None:
    """Make a token; it is printed once and only its SHA-256 is kept."""
    from zmm.serve import auth

    service = _service()
    try:
        token, row = auth.create(service, name, requester=requester, max_priority=max_priority)
    finally:
        service.close()
    if as_json:
        emit_json({"token": token, **row})
        return
    emit(token)
    say(f"{row['id']}: shown once; keep it secret (revoke: zmm serve token revoke {row['id']})")


@token_app.command("list")
def list_tokens(as_json: bool = typer.Option(False, "--json", help="Print the tokens as JSON.")
                ) -> None:
    """The tokens (never their values): name, limits, created, last used, revoked."""
    service = _service()
    try:
        rows = service.store().tokens()
    finally:
        service.close()
    if as_json:
        emit_json({"tokens": rows})
        return
    for row in rows:
        emit("\t".join(str(row[key] or "-") for key in (
            "id", "name", "requester", "max_priority", "created_at", "last_used_at",
            "revoked_at")))


@token_app.command("revoke")
def revoke(token_id: str = typer.Argument(..., help="A token's id (tok-...)."),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Refuse a token from now on."""
    service = _service()
    try:
        row, changed = service.store().revoke_token(token_id)
    finally:
        service.close()
    if as_json:
        emit_json({"token": row, "changed": changed})
        return
    emit(f"{row['id']}\trevoked" + ("" if changed else " (already)"))
