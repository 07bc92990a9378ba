"""The `zmm` command: merges one small typer app per command group.

Command modules hold parsing and rendering only; each calls one service
(store, worker, ...) and prints. Heavy libraries are imported inside commands.
"""

from __future__ import annotations

import typer

from zmm import __version__
from zmm.cli import cleanup, config_cmd, doctor, generate, gpu, history, models, queue, worker
from zmm.cli import stats
from zmm.cli.common import ZmmGroup

app = typer.Typer(
    cls=ZmmGroup,
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


generate.register(app)
worker.register(app)
doctor.register(app)
cleanup.register(app)
stats.register(app)
app.add_typer(queue.app, name="queue")
app.add_typer(history.app, name="history")
app.add_typer(models.app, name="models")
app.add_typer(gpu.app, name="gpu")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    app()
