"""`zmm config`: the merged settings (secrets masked) and where the file lives."""

from __future__ import annotations

import typer

from zmm.cli.common import emit, emit_json, load_config

app = typer.Typer(help="Show settings and where they come from.", no_args_is_help=True)


@app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print settings as JSON.")) -> None:
    """Settings after defaults < config.toml < ZMM_* environment."""
    settings = load_config()
    shown = settings.masked()
    if as_json:
        emit_json({"home": str(settings.home), "settings": shown, "sources": settings.sources})
        return
    emit(f"# home: {settings.home}")
    for section, values in shown.items():
        emit(f"[{section}]")
        for key, value in values.items():
            source = settings.sources.get(f"{section}.{key}", "file")
            emit(f"{key} = {_toml_value(value)}  # {source}")
        emit()


@app.command("path")
def path(as_json: bool = typer.Option(False, "--json", help="Print the path as JSON.")) -> None:
    """Print the path of config.toml (it need not exist)."""
    from zmm.config import config_path

    where = config_path(load_config().home)
    if as_json:
        emit_json({"path": str(where), "exists": where.exists()})
        return
    emit(str(where))


def _toml_value(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)
