"""Showing things to a person: the only module that imports rich.

Progress goes to stderr: a live rich display on a terminal, plain log lines
otherwise (or when NO_COLOR is set), so pipes and CI logs stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any


def interactive(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ \
        and os.environ.get("TERM") != "dumb"


def describe(snap: Any) -> str:
    return describe_job(snap.job, snap.position, snap.queued_total)


def describe_job(job: Any, position: int | None = None, queued_total: int = 0) -> str:
    """One line for a job's current state, used by every display."""
    if job.status == "queued":
        parts = [f"position {position} of {queued_total}"] if position else []
        parts += [job.phase_detail] if job.phase_detail else []
        return "queued" + (f" ({'; '.join(parts)})" if parts else "")
    if job.status == "running":
        phase = job.phase or "running"
        if job.progress_max:
            return f"{phase} {job.progress_value or 0}/{job.progress_max}"
        return phase + (f": {job.phase_detail}" if job.phase_detail else "")
    if job.status == "succeeded":
        return "succeeded" + (f": {job.output_path}" if job.output_path else "")
    return job.status + (f": {job.error_message}" if job.error_message else "")


class FollowView:
    """Live view of jobs being followed; `update(snapshot)` on every change."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.live = interactive()
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._started = time.monotonic()

    def __enter__(self) -> FollowView:
        if self.live:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn)

            self._progress = Progress(
                TextColumn("[bold]{task.fields[job]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.description}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, snap: Any) -> None:
        text = describe(snap)
        if self._progress is None:
            elapsed = time.monotonic() - self._started
            sys.stderr.write(f"[{elapsed:6.1f}s] {snap.job.id} {text}\n")
            sys.stderr.flush()
            return
        job = snap.job
        task = self._tasks.get(job.id)
        if task is None:
            task = self._progress.add_task(text, job=job.id, total=None)
            self._tasks[job.id] = task
        total = job.progress_max if job.status == "running" and job.progress_max else None
        completed = job.progress_value or 0
        if snap.finished:
            total, completed = 1, 1
        self._progress.update(task, description=text, total=total, completed=completed)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    """A table of data on stdout (rich on a terminal, tab-separated otherwise)."""
    if not interactive(sys.stdout):
        if columns:
            sys.stdout.write("\t".join(columns) + "\n")
        for row in rows:
            sys.stdout.write("\t".join("" if cell is None else str(cell) for cell in row) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, header_style="bold", box=None, pad_edge=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(grid)


def fields(pairs: list[tuple[str, Any]]) -> None:
    """`key: value` lines on stdout, aligned."""
    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        sys.stdout.write(f"{key.ljust(width)}  {'' if value is None else value}\n")
    sys.stdout.flush()
