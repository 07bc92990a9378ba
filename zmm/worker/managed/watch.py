"""The worker's side of managed mode: `ChildWatch` asks the Supervisor, on each
turn of the loop, what happened to the ComfyUI child (it exited, hung, was
started again, or is no longer restarted), records it on the backend's row,
and decides what becomes of the jobs that were on it: back to the queue, or
failed by the `CrashGuard` when one was running during `comfyui.crash_limit`
crashes in a row. Without a managed child (no Supervisor) it does nothing.
"""

from __future__ import annotations

from typing import Any

from zmm.errors import ComfyUnavailable
from zmm.outcome import Outcome
from zmm.store import Store
from zmm.worker.execution import Inflight
from zmm.worker.managed.supervisor import ChildReport
from zmm.worker.outcomes import Recorder, failed, requeue


class CrashGuard:
    """The outcome of a job that was running when ComfyUI went down: back to the
    queue (no attempt used), unless it was running during `limit` crashes in a
    row, when it fails instead of crash-looping the server."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._crashes: dict[str, int] = {}

    def outcome(self, job_id: str, reason: str, *, running: bool) -> Outcome:
        count = self._crashes.get(job_id, 0) + (1 if running else 0)
        if running and count >= self.limit:
            self._crashes.pop(job_id, None)
            word = {2: "twice"}.get(count, f"{count} times")
            return failed(f"ComfyUI crashed {word} while running this job (last: {reason})",
                          "crash")
        self._crashes[job_id] = count
        return requeue(f"{reason}: queued again", consume=False)


class ChildWatch:
    """Made by `assembly.build_worker` with the managed Supervisor (or None)."""

    def __init__(self, supervisor: Any | None, crashes: CrashGuard, *, store: Store,
                 status: Any, observer: Any, recorder: Recorder) -> None:
        self.supervisor, self.crashes = supervisor, crashes
        self.store, self.status, self.observer, self.recorder = store, status, observer, recorder

    @property
    def restarting(self) -> bool:
        """The managed child is down or starting again: wait for it, do not give up."""
        return self.supervisor is not None and self.supervisor.restarting

    def answered(self) -> None:
        """The worker reached the server."""
        if self.supervisor is not None:
            self.supervisor.answered()

    def unreachable(self, exc: ComfyUnavailable) -> ComfyUnavailable:
        """What a foreground worker reports when the server does not answer: after
        a crash loop, why the child is no longer started, not the refused connection."""
        if self.supervisor is None or self.supervisor.gave_up is None:
            return exc
        return ComfyUnavailable(exc.url, self.supervisor.gave_up, hint=exc.hint)

    def check(self, inflight: list[Inflight]) -> ChildReport | None:
        """What happened to the child since the last turn (it exited, hung, or was
        started again), recorded; None when nothing did."""
        if self.supervisor is None:
            return None
        report = self.supervisor.poll()
        if report is None:
            last = max((i.last_event for i in inflight), default=None)
            report = self.supervisor.check_health(last)
        if report is not None:
            if report.kind != "started":  # the Supervisor said that one as it started
                self.observer.notice(report.message)
            self.status.child_changed(report)
        return report

    def jobs_lost(self, report: ChildReport, lost: list[Inflight]) -> None:
        """The child went down with `lost` on it: each goes back to the queue, or
        fails at the crash limit (the first, or any that was executing, ran)."""
        for index, inflight in enumerate(lost):
            running = index == 0 or inflight.executing
            self.store.add_event(inflight.job.id, f"comfyui-{report.kind}", report.message)
            self.recorder.record(inflight.job, self.crashes.outcome(
                inflight.job.id, report.message.partition(";")[0], running=running))
