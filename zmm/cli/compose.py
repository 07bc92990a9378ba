"""`zmm compose`: draw other text or another brand onto an existing job's
image, as a new job, without generating again (zmm.recompose)."""

from __future__ import annotations

from typing import Optional

import typer

from zmm.cli.common import emit, emit_json, load_config, open_store

app = typer.Typer(add_completion=False)


@app.command("compose")
def compose(
    job_id: str = typer.Argument(..., help="The job whose image to compose onto (id or "
                                 "unique prefix)."),
    title: Optional[str] = typer.Option(None, "--title", help="Text drawn onto the image."),
    subtitle: Optional[str] = typer.Option(None, "--subtitle", help="A smaller line under "
                                           "the title."),
    footer: Optional[str] = typer.Option(None, "--footer", help="A small line at the end."),
    brand: Optional[str] = typer.Option(None, "--brand", help="$ZMM_HOME/brands/NAME.toml "
                                        "(default: the built-in brand)."),
    as_json: bool = typer.Option(False, "--json", help="Print the new job as JSON."),
) -> None:
    """Compose an existing job's image (without its text) again, as a new job."""
    from zmm import recompose

    settings = load_config()
    raw = {"title": title, "subtitle": subtitle, "footer": footer, "brand": brand}
    with open_store(settings) as store:
        job = recompose.recompose(store, settings, job_id, raw)
    if as_json:
        emit_json({"job": job.public(settings.assets_dir)})
        return
    emit(str(job.output_file(settings.assets_dir)))
