"""`zmm stats`: the project's success metrics over a time window, from the spool."""

from __future__ import annotations

import typer

from zmm.cli.common import emit_json, load_config, open_store
from zmm.errors import InvalidInput

app = typer.Typer(add_completion=False)


def parse_window(text: str) -> float | None:
    """`30m`, `12h`, `7d`, `2w` -> seconds; `all` -> None (no lower bound)."""
    from zmm.cli.history import parse_since

    if text.strip().lower() == "all":
        return None
    try:
        return parse_since(text)
    except InvalidInput:
        raise InvalidInput("since", "a duration such as 30m, 12h, 7d or 2w, at most 100 "
                           "years, or all") from None


@app.command("stats")
def stats(
    since: str = typer.Option("30d", "--since", help="Jobs created within, e.g. 7d, or all."),
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
