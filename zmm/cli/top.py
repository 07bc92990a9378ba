"""`zmm top`: a live view of the spool and its backends until `q` or Ctrl-C.
Parses the options and hands frames (zmm.views.dashboard) to the display
(zmm.cli.render_top); reads nothing itself.
"""

from __future__ import annotations

import math

import typer

from zmm.cli.common import load_config, open_store
from zmm.errors import InvalidInput

app = typer.Typer(add_completion=False)
INTERVALS = (0.1, 3600.0)


def parse_interval(text: str) -> float:
    low, high = INTERVALS
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not low <= seconds <= high:  # also refuses nan
        raise InvalidInput("interval", f"a number of seconds from {low:g} to {high:g}")
    return seconds


@app.command("top")
def top(
    interval: str = typer.Option("2", "--interval", metavar="S",
                                 help="Seconds between frames (0.1 to 3600)."),
    once: bool = typer.Option(False, "--once", help="Print one frame and exit."),
) -> None:
    """A live view: backends, running jobs, the queue head, the last hour.

    Backends with GPU memory, running jobs with their steps, the head of the
    queue, the last hour's throughput and recent failures, refreshed every
    --interval seconds. `q` or Ctrl-C quits (exit 0). Full screen on a terminal;
    plain text frames, separated by a form-feed line, when piped."""
    from zmm.cli import render_top
    from zmm.views import dashboard

    seconds = parse_interval(interval)
    settings = load_config()
    with open_store(settings, read_only=True) as store:
        if once:
            render_top.print_once(dashboard.read(store, settings))
            return
        try:
            render_top.watch(lambda: dashboard.read(store, settings), seconds)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a view is left: the display has restored the terminal
