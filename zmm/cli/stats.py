"""`zmm stats`: the project's success metrics over a time window, from the spool."""

from __future__ import annotations

import typer

from zmm.cli.common import emit_json, load_config, open_store

app = typer.Typer(add_completion=False)


def parse_window(text: str) -> float | None:
    """`30min`, `12h`, `7d`, `3mo` -> seconds; `all` -> None (no lower bound)."""
    from zmm import durations

    return durations.parse("since", text, words={"all": None})


@app.command("stats")
def stats(
    since: str = typer.Option("30d", "--since", help="Jobs created within, e.g. 12h, 7d, 3mo "
                              "(units: s min h d w mo y), or all."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Jobs by status and backend, success rates, generation times, cost, swaps, targets."""
    from zmm.cli import render

    span = parse_window(since)
    settings = load_config()
    with open_store(settings, read_only=True) as store:
        now = store.clock()
        report = store.stats_report(None if span is None else now - span, now)
    if as_json:
        emit_json(report.public())
    else:
        render.stats(report.public())
