"""The `zmm` command: one small typer app per command module, loaded when its
command runs (so `zmm generate` never imports `zmm cleanup`'s code).

Command modules hold parsing and rendering only; each calls one service
(store, worker, ...) and prints. Heavy libraries are imported inside commands.
"""

from __future__ import annotations

import typer

from zmm import __version__
from zmm.cli.common import ZmmGroup

# Command name -> (module under zmm.cli, command in its `app`; None: the whole
# app is a command group). Listed in the order `zmm --help` shows them.
COMMANDS = {
    "generate": ("generate", "generate"),
    "wait": ("generate", "wait"),
    "compose": ("compose", "compose"),
    "serve-worker": ("worker", "serve-worker"),
    "backends": ("backends", None),
    "doctor": ("doctor", "doctor"),
    "cleanup": ("cleanup", "cleanup"),
    "stats": ("stats", "stats"),
    "top": ("top", "top"),
    "queue": ("queue", None),
    "history": ("history", None),
    "models": ("models", None),
    "gpu": ("gpu", None),
    "config": ("config_cmd", None),
    "workflow": ("workflow", None),
    "serve": ("serve", None),
    "mcp": ("mcp", "mcp"),
}


class Root(ZmmGroup):
    lazy = COMMANDS


app = typer.Typer(
    cls=Root,
    name="zmm",
    help="Generate images on your own GPU through ComfyUI, from a local job spool "
    "shared with an Ollama LLM server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"zmm {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """zmm: a local image-generation spool for ComfyUI."""


def main() -> None:
    app()
