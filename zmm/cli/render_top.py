"""Drawing `zmm top`: part of the rendering layer beside render.py, and with it
the only code that imports rich (only while drawing). Turns a zmm.views.dashboard
Frame into panels: full-screen with rich on a terminal (`Screen`, which also
owns the terminal's key mode and always restores it), plain ASCII text frames
otherwise (`plain`). Reads nothing from the spool; decides nothing.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from zmm.cli.keys import EOF, Keys
from zmm.views.dashboard import NO_WORKER, Frame

GB = 1024**3
SPARKS = "▁▂▃▄▅▆▇█"
FRAME_SEPARATOR = "\f"  # a line of its own between plain frames (a page break)
PROMPT_WIDTH = 40
ERROR_WIDTH = 72

Rows = list[list[str]]


def full_screen(stream: Any = None) -> bool:
    """Whether `stream` (stdout) is a terminal that can show a full-screen view.
    NO_COLOR keeps the view and drops its colours (rich honours it)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


# -- panels as rows of text, shared by both displays ------------------------------


def backend_rows(frame: Frame, bar: Callable[[float | None], str]) -> Rows:
    rows = []
    for line in frame.backends:
        memory = "?"
        if line.vram_total_bytes:
            used = line.vram_total_bytes - (line.vram_free_bytes or 0)
            memory = f"{used / GB:.1f}/{line.vram_total_bytes / GB:.1f} GB"
        state = line.state + (f" (managed, {line.restarts} restarts)" if line.managed else "")
        rows.append([line.name, state, str(line.running),
                     "remote" if line.gpu is None else str(line.gpu),
                     bar(line.vram_used_fraction), memory, line.loaded_model or "",
                     _cut(line.last_error or "", ERROR_WIDTH // 2)])
    return rows


BACKEND_COLUMNS = ["backend", "state", "jobs", "gpu", "memory", "used", "model", "last error"]


def running_rows(frame: Frame, bar: Callable[[float], str]) -> Rows:
    rows = []
    for job in frame.running:
        step = f"{job.step or 0}/{job.steps}" if job.steps else ""
        phase = job.phase + (" (cancelling)" if job.cancelling else "")
        progress = f"{bar((job.step or 0) / job.steps)} {step}" if job.steps else ""
        rows.append([job.id, phase, progress, duration(job.elapsed_s), job.where,
                     job.priority, job.model or "", _cut(job.prompt, PROMPT_WIDTH)])
    return rows


RUNNING_COLUMNS = ["id", "phase", "step", "elapsed", "backend", "priority", "model", "prompt"]


def queue_rows(frame: Frame) -> Rows:
    return [[str(job.position), job.id, job.priority, duration(job.waited_s), job.model or "",
             job.on_backend or "", _cut(job.note or job.prompt, PROMPT_WIDTH)]
            for job in frame.head]


QUEUE_COLUMNS = ["#", "id", "priority", "waiting", "model", "on", "prompt"]


def failure_rows(frame: Frame) -> Rows:
    return [[job.id, ago(job.ago_s), job.where or "", _cut(job.error, ERROR_WIDTH)]
            for job in frame.failures]


FAILURE_COLUMNS = ["id", "when", "backend", "error"]


def queue_title(frame: Frame) -> str:
    counts = ", ".join(f"{level} {count:,}" for level, count in frame.queued_by_priority.items()
                       if count)
    shown = f"next {len(frame.head)} " if frame.head else ""
    return f"queue: {shown}of {frame.queued:,} queued" + (f" ({counts})" if counts else "")


def throughput_summary(frame: Frame) -> str:
    flow = frame.throughput
    median = f"{flow.median_generation_s:.1f} s" if flow.median_generation_s is not None else "-"
    more = "at least " if flow.partial else ""
    return (f"{more}{flow.succeeded:,} succeeded, {flow.failed:,} failed, "
            f"{flow.cancelled:,} cancelled; median generation {median}")


def footer(frame: Frame) -> str:
    state = "PAUSED (zmm queue resume)" if frame.paused else "claiming"
    workers = f"{frame.workers} worker{'s' if frame.workers != 1 else ''}"
    return (f"spool {frame.spool} | queue {state} | {workers} | "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(frame.at))} UTC")


def sparkline(values: list[int]) -> str:
    """One block per value, scaled to the largest; the lowest block only for zero."""
    top = max(values, default=0)
    steps = len(SPARKS) - 1
    return "".join(SPARKS[max(1, round(value / top * steps)) if value else 0]
                   for value in values)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def ago(seconds: float | None) -> str:
    return "-" if seconds is None else f"{duration(seconds)} ago"


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


# -- plain text -----------------------------------------------------------------------


def plain(frame: Frame) -> str:
    """One frame as ASCII text: no escape codes, one panel after another."""
    bar = _ascii_bar
    flow = frame.throughput
    minutes = flow.bucket_s // 60
    parts = [
        _section("backends", BACKEND_COLUMNS, backend_rows(frame, bar), "no backends"),
        _section(f"running: {len(frame.running)}", RUNNING_COLUMNS, running_rows(frame, bar),
                 "nothing running"),
        _section(queue_title(frame), QUEUE_COLUMNS, queue_rows(frame), "the queue is empty"),
        "\n".join([f"last hour ({minutes}-minute bars, oldest first): "
                   + throughput_summary(frame),
                   "  succeeded " + " ".join(f"{ok:>4}" for ok, _ in flow.buckets),
                   "  failed    " + " ".join(f"{bad:>4}" for _, bad in flow.buckets)]),
        _section("recent failures", FAILURE_COLUMNS, failure_rows(frame), "no failures"),
        footer(frame),
    ]
    return "\n\n".join(parts) + "\n"


def _section(title: str, columns: list[str], rows: Rows, empty: str) -> str:
    if not rows:
        return f"{title}\n  ({empty})"
    table = [columns, *rows]
    widths = [max(len(row[index]) for row in table) for index in range(len(columns))]
    lines = ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip()
             for row in table]
    return "\n".join([title, *lines])


def _ascii_bar(fraction: float | None, width: int = 12) -> str:
    if fraction is None:
        return ""
    filled = round(fraction * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def print_once(frame: Frame) -> None:
    """One frame on stdout: drawn with rich on a terminal, plain text otherwise."""
    if full_screen():
        from rich.console import Console

        Console().print(_rich_frame(frame, keys=False))
        return
    sys.stdout.write(plain(frame))
    sys.stdout.flush()


def watch(next_frame: Callable[[], Frame], interval: float) -> None:
    """Show a new frame every `interval` seconds until `q` (or Ctrl-D) is pressed,
    or Ctrl-C or SIGTERM: full screen on a terminal; otherwise plain frames, each
    followed by a line holding only a form feed, until the reader goes away.
    KeyboardInterrupt (Ctrl-C, SIGTERM) reaches the caller once the terminal is
    restored."""
    previous = _terminate_as_interrupt()
    try:
        if full_screen():
            with Screen() as screen:
                _loop(next_frame, screen.show, screen.wait_key, interval)
            return
        with Keys(sys.stdin) as keys:
            _loop(next_frame, _write_plain, keys.wait, interval)
    except BrokenPipeError:
        # The reader of the pipe has gone: nobody is left to show frames to.
        # Point stdout at nothing so that Python's own flush at exit stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    finally:
        _restore_signal(previous)


def _loop(next_frame: Callable[[], Frame], show: Callable[[Frame], None],
          wait_key: Callable[[float], str | None], interval: float) -> None:
    while True:
        show(next_frame())
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            keys = wait_key(left)
            if keys and any(key in QUIT_KEYS for key in keys):
                return


QUIT_KEYS = {"q", "Q", EOF}


def _write_plain(frame: Frame) -> None:
    sys.stdout.write(plain(frame) + FRAME_SEPARATOR + "\n")
    sys.stdout.flush()


def _terminate_as_interrupt() -> Any:
    """SIGTERM raises KeyboardInterrupt while the view runs, so the terminal is
    restored on the way out as it is for Ctrl-C. Returns the handler it replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_signal(previous: Any) -> None:
    if previous is not None:
        import signal

        signal.signal(signal.SIGTERM, previous)


# -- full screen ----------------------------------------------------------------------


class Screen:
    """The terminal while `zmm top` runs: the alternate screen (rich Live,
    screen=True) and single keys without echo. Both are undone on leaving,
    however the block ends (q, Ctrl-C, an error)."""

    def __init__(self) -> None:
        self.keys = Keys(sys.stdin)
        self._live: Any = None

    def __enter__(self) -> Screen:
        from rich.console import Console
        from rich.live import Live

        self.keys.__enter__()
        try:
            self._live = Live(console=Console(), screen=True, auto_refresh=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        except BaseException:
            self.keys.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._live is not None:
                self._live.stop()
        finally:
            self.keys.__exit__(None, None, None)

    def show(self, frame: Frame) -> None:
        self._live.update(_rich_frame(frame), refresh=True)

    def wait_key(self, timeout: float) -> str | None:
        return self.keys.wait(timeout)


def _rich_frame(frame: Frame, keys: bool = True) -> Any:
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    flow = frame.throughput
    minutes = flow.bucket_s // 60
    succeeded = [ok for ok, _ in flow.buckets]
    failed = [bad for _, bad in flow.buckets]
    throughput = Group(
        Text(throughput_summary(frame)),
        Text.assemble(("succeeded ", "bold"), (sparkline(succeeded), "green"),
                      f"  up to {max(succeeded):,} per bar"),
        Text.assemble(("failed    ", "bold"), (sparkline(failed), "red"),
                      f"  up to {max(failed):,} per bar"),
    )
    return Group(
        _rich_table("backends", BACKEND_COLUMNS, backend_rows(frame, _block_bar), "no backends"),
        _rich_table(f"running: {len(frame.running)}", RUNNING_COLUMNS,
                    running_rows(frame, _block_bar), "nothing running"),
        _rich_table(queue_title(frame), QUEUE_COLUMNS, queue_rows(frame), "the queue is empty"),
        Panel(throughput, title=f"last hour, {minutes}-minute bars", title_align="left"),
        _rich_table("recent failures", FAILURE_COLUMNS, failure_rows(frame), "no failures"),
        Text(footer(frame) + ("   q quits" if keys else ""),
             style="bold red" if frame.paused else "reverse"),
    )


# Columns that give way when the terminal is narrow; the others keep their width.
FLEXIBLE = {"model", "prompt", "error", "last error"}
STATE_STYLES = {"up": "green", "idle": "green", "busy": "green", "down": "bold red",
                "draining": "yellow", NO_WORKER: "dim", "starting": "cyan", "stopped": "dim"}


def _rich_table(title: str, columns: list[str], rows: Rows, empty: str) -> Any:
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return Panel(Text(empty, style="dim"), title=title, title_align="left")
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for index, column in enumerate(columns):
        widest = max(len(column), *(len(row[index]) for row in rows))
        grid.add_column(column, no_wrap=True, overflow="ellipsis",
                        min_width=None if column in FLEXIBLE else widest)
    for row in rows:
        cells = [Text(cell, style=STATE_STYLES.get(cell.split(" (")[0], "")
                      if column == "state" else "") for column, cell in zip(columns, row,
                                                                            strict=True)]
        grid.add_row(*cells)
    return Panel(grid, title=title, title_align="left")


def _block_bar(fraction: float | None, width: int = 12) -> str:
    if fraction is None:
        return ""
    filled = round(fraction * width)
    return "█" * filled + "░" * (width - filled)
