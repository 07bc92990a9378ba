"""Showing things to a person: with render_top.py (`zmm top`), the only code that imports rich.

Progress goes to stderr: a live rich display on a terminal, plain log lines
otherwise (or when NO_COLOR is set), so pipes and CI logs stay readable.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from zmm.secrets import scrub


def interactive(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ \
        and os.environ.get("TERM") != "dumb"


def describe(snap: Any) -> str:
    return describe_job(snap.job, snap.position, snap.queued_total)


def describe_job(job: Any, position: int | None = None, queued_total: int = 0,
                 waiting: str | None = None) -> str:
    """One line for a job's current state, used by every display (`waiting`: why
    no live backend can run a queued job, zmm.views.routing)."""
    if job.status == "queued":
        parts = [f"position {position} of {queued_total}"] if position else []
        parts += [waiting] if waiting else []
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

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.quiet = quiet  # only a job that did not succeed, and the notices
        self.live = interactive() and not quiet
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: dict[str, tuple[Any, ...]] = {}  # plain lines: the state last written
        self._places: dict[str, int] = {}  # queue positions of the followed queued jobs
        self._started = time.monotonic()

    def __enter__(self) -> FollowView:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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

    def notice(self, text: str) -> None:
        """A line about the waiting itself (who runs the queue), above the bars."""
        text = scrub(text)
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def update(self, snap: Any) -> None:
        if self._progress is None:
            self._line(snap)
            return
        text = describe(snap)
        job = snap.job
        task = self._tasks.get(job.id)
        if task is None:
            task = self._progress.add_task(text, job=job.id, total=None)
            self._tasks[job.id] = task
        total = job.progress_max if job.status == "running" and job.progress_max else None
        completed = job.progress_value or 0
        if total is not None and completed >= total:
            # The last step is not the end (decoding, a second pass, saving follow), and
            # rich stops a task's clock for good once it reaches its total.
            total = None
        if snap.finished:
            total, completed = 1, 1
        self._progress.update(task, description=text, total=total, completed=completed)


    def _line(self, snap: Any) -> None:
        """Plain lines (a pipe, a CI log): each state a job enters, once, and the
        queue position of the first of the jobs still queued as it moves. Every
        job's position and every sampler step would be too many for a log (N jobs
        moving up one place after each finish is N^2 lines); the terminal shows them."""
        job = snap.job
        if job.status == "queued" and snap.position:
            self._places[job.id] = snap.position
        else:
            self._places.pop(job.id, None)
        state: tuple[Any, ...] = (job.status, job.phase) if job.status == "running" \
            else (job.status,)
        if job.status == "queued" and self._places.get(job.id) == min(self._places.values(),
                                                                      default=None):
            state = (job.status, snap.position)  # the head: how far the queue has moved
        if self._said.get(job.id) == state:
            return
        self._said[job.id] = state
        if self.quiet and (not snap.finished or job.status == "succeeded"):
            return
        text = describe(snap) if job.status != "running" else (job.phase or "running")
        elapsed = time.monotonic() - self._started
        sys.stderr.write(f"[{elapsed:6.1f}s] {job.id} {text}\n")
        sys.stderr.flush()


WHOLE_COLUMNS = frozenset({"id", "job"})  # never wrapped, whatever the terminal's width


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
    for index, column in enumerate(columns):
        if column in WHOLE_COLUMNS:  # an id folded over two lines cannot be copied
            widest = max((len(str(row[index] or "")) for row in rows), default=len(column))
            grid.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:
            grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    Console().print(grid)


def fields(pairs: list[tuple[str, Any]]) -> None:
    """`key: value` lines on stdout, aligned; text as it is, nothing for None,
    any other value as JSON (true, ["a.png"]), never a Python repr."""
    import json

    width = max((len(key) for key, _ in pairs), default=0)
    for key, value in pairs:
        shown = "" if value is None else value if isinstance(value, str) else json.dumps(
            value, ensure_ascii=False, default=str)
        sys.stdout.write(f"{key.ljust(width)}  {shown}\n")
    sys.stdout.flush()


def stats(data: dict[str, Any]) -> None:
    """`zmm stats` for a person: summary lines, per-backend and per-model tables, then
    the seed's targets, met or not. `data` is the `--json` shape."""
    statuses = data["jobs"]["by_status"]
    by_status = ", ".join(f"{status} {count}" for status, count in statuses.items())
    rate = data["success_rate"]
    events = data["events"]
    per_week = data["images_per_week"]
    fields([
        ("window", f"{data['since'] or 'all jobs'} .. {data['until']}"),
        ("jobs", f"{data['jobs']['total']} ({by_status})"),
        ("success", "no finished jobs" if rate is None else
         f"{rate:.2%} (local {data['local_success_rate']:.2%})"),
        ("cloud", f"${data['cost_usd']['total']:.4f}; jobs succeeded in the cloud: "
                  f"{data['cost_usd']['cloud_jobs']}"),
        ("events", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in events.items())),
        ("images", "no jobs" if per_week is None else f"{per_week:.1f} per week"),
    ])
    if data["by_backend"]:
        sys.stdout.write("\n")
        table("by backend", ["backend", *statuses, "cost_usd"],
              [[name, *(counts[k] for k in statuses), f"{counts['cost_usd']:.4f}"]
               for name, counts in data["by_backend"].items()])
    if data["generation_time_s"]:
        sys.stdout.write("\n")
        table("generation time", ["model", "count", "median_s", "p95_s", "max_s"],
              [[model, t["count"], f"{t['median_s']:.1f}", f"{t['p95_s']:.1f}", f"{t['max_s']:.1f}"]
               for model, t in data["generation_time_s"].items()])
    # Values as reported (`{:g}`), so a shown value never contradicts its result.
    labels = {"median_generation_s": ("median generation time", "< {:g} s", "{:g} s"),
              "local_success_rate": ("local success", "> {:.0%}", "{:.2%}"),
              "images_per_week": ("images per week", ">= {:g}", "{:g}")}
    rows = []
    for name, target in data["targets"].items():
        label, goal, shown = labels[name]
        value = "no data" if target["value"] is None else shown.format(target["value"])
        met = {True: "met", False: "not met", None: "unknown"}[target["met"]]
        rows.append([label, goal.format(target["target"]), value, met])
    sys.stdout.write("\n")
    table("targets", ["target", "goal", "value", "result"], rows)


class WorkerView:
    """What `zmm serve-worker` shows: the current jobs (phase, node, step bar,
    elapsed), queue depth by priority, and the last finished jobs with paths.
    Implements the worker's observer protocol."""

    def __init__(self, live: bool | None = None) -> None:
        self.live = interactive() if live is None else live
        self._current: dict[str, Any] = {}
        self._logged: dict[str, str] = {}  # job id -> the phase last logged
        self._finished: list[Any] = []
        self._status = "starting"
        self._waiting_for: str | None = None  # the waiting line last said
        self._depth: Any = None
        self._display: Any = None  # a rich Live while shown

    def attach(self, store: Any, settings: Any) -> None:
        aging = settings.get("worker.aging_s")
        self._depth = lambda: store.run_order(aging)

    def __enter__(self) -> WorkerView:
        if self.live:
            from rich.console import Console
            from rich.live import Live

            self._display = Live(get_renderable=self._render, refresh_per_second=4,
                                 console=Console(stderr=True, log_path=False), transient=False)
            self._display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.stop()

    # -- observer protocol --------------------------------------------------------

    def waiting(self, url: str, reason: str, retry_in: float) -> None:
        """Said once, and again when it changes (the reason, or the wait while it
        backs off): a worker retrying every second for an hour writes one line, not
        3,600."""
        self._status = f"waiting for ComfyUI at {url}: {reason}, retrying in {retry_in:g}s"
        if self._waiting_for != self._status:
            self._waiting_for = self._status
            self._log(self._status)

    def connected(self, url: str) -> None:
        self._waiting_for = None
        self._status = f"connected to ComfyUI at {url}"
        self._log(self._status)

    def job_changed(self, inflight: Any) -> None:
        job_id = inflight.job.id
        self._current[job_id] = inflight
        progress = inflight.progress
        step = f" {progress[0]}/{progress[1]}" if progress else ""
        if self._logged.get(job_id) != inflight.phase:
            self._logged[job_id] = inflight.phase
            self._log(f"{job_id} {inflight.phase}{step}")
        elif not self.live and progress and progress[0] == progress[1]:
            self._log(f"{job_id} {inflight.phase}{step}")

    def job_finished(self, job: Any) -> None:
        self._current.pop(job.id, None)
        self._logged.pop(job.id, None)
        self._finished = ([job] + self._finished)[:5]
        self._log(f"{job.id} {describe_job(job)}")

    def notice(self, text: str) -> None:
        self._log(text)

    # -- drawing -------------------------------------------------------------------

    def _log(self, line: str) -> None:
        line = scrub(line)
        stamp = time.strftime("%H:%M:%S")
        if self._display is not None:
            self._display.console.log(line)
        else:
            sys.stderr.write(f"{stamp} {line}\n")
            sys.stderr.flush()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        current = Table(box=None, show_header=False, pad_edge=False)
        for inflight in list(self._current.values()):
            progress = inflight.progress
            bar = ProgressBar(total=progress[1], completed=progress[0], width=30) if progress \
                else ProgressBar(total=None, width=30)
            elapsed = time.monotonic() - (inflight.started or inflight.submitted)
            step = f"{progress[0]}/{progress[1]}" if progress else ""
            current.add_row(inflight.job.id, inflight.phase, bar, step, f"{elapsed:5.1f}s")
        parts: list[Any] = [self._status, current]
        if self._depth is not None:
            queued = self._depth()
            counts = {level: 0 for level in ("CRITICAL", "HIGH", "MEDIUM", "LOW")}
            for job in queued:
                counts[job.priority] += 1
            parts.append("queued: " + "  ".join(f"{k} {v}" for k, v in counts.items()))
        for job in self._finished:
            parts.append(f"  {job.id} {describe_job(job)}")
        return Group(*parts)
