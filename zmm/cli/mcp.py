"""`zmm mcp`: the MCP server on stdin/stdout for an agent's host (zmm[serve])."""

from __future__ import annotations

import typer

from zmm.cli.common import load_config

app = typer.Typer(add_completion=False)


@app.command("mcp")
def mcp() -> None:
    """Serve zmm's tools to an MCP host over stdio (docs/serve.md)."""
    from zmm.cli.serve import need_extra

    need_extra()
    from zmm.serve import core, mcp_tools

    settings = load_config()
    service = core.Service(settings)
    try:
        mcp_tools.build(service).run("stdio")
    finally:
        service.close()
