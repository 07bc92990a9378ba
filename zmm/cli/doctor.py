"""`zmm doctor`: check everything zmm depends on, one line per check."""

from __future__ import annotations

import typer

from zmm.cli.common import emit, emit_json, load_config

app = typer.Typer(add_completion=False)


@app.command("doctor")
def doctor(as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON.")) -> None:
    """Spool integrity and schema, permissions, config, ComfyUI, Ollama, NVML, templates.

    Exit 0 when every check passes (warnings allowed), else the code of the most
    serious failure (7 spool, 2 config, 6 templates, 4 backends)."""
    from zmm import doctor as checks
    from zmm.errors import USAGE, ZmmError

    try:
        settings = load_config()
    except ZmmError as exc:
        results = [checks.Check("config", "fail", exc.message, USAGE)]
    else:
        results = [checks.Check("config", "ok", f"{settings.home / 'config.toml'}")]
        results += checks.run_all(settings)
    code = checks.exit_code(results)
    if as_json:
        emit_json({"ok": code == 0, "exit_code": code, "checks": [c.public() for c in results]})
    else:
        for check in results:
            emit(f"{check.status:<4}  {check.name:<22} {check.detail}")
    raise typer.Exit(code)
