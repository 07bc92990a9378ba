"""Following a job on ComfyUI: folding websocket events into its `Inflight`
record, and writing its phase and sampler step to the spool, at most every
`progress_interval_s` per job. Nothing here talks to ComfyUI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zmm.backends.comfy_events import Event
from zmm.store import Store
from zmm.timestamps import iso
from zmm.worker.execution import Inflight


def owner(inflight: list[Inflight], event: Event) -> Inflight | None:
    """The job an event is about; ComfyUI's `executing` with no prompt id is the
    running one's."""
    found = next((i for i in inflight if i.prompt_id == event.prompt_id), None)
    if found is None and event.type == "executing" and event.prompt_id is None:
        found = next((i for i in inflight if i.executing), None)
    return found


def apply_event(inflight: Inflight, event: Event, now: float) -> bool:
    """Fold one event into the job's record. True when ComfyUI finished the prompt
    (its verdict is then read from /history)."""
    inflight.last_event = now
    data = event.data
    if event.type == "execution_start":
        inflight.started = now
        inflight.phase = "starting"
    elif event.type == "executing":
        if data.get("node") is None and event.prompt_id is not None:
            return True
        inflight.phase = inflight.phase_of(data.get("node"))
        if inflight.phase.endswith("sampling") and inflight.progress is not None \
                and inflight.progress[2] != str(data.get("node")):
            inflight.progress = None  # another sampler's steps (a hires pass): not this one's
    elif event.type == "progress":
        inflight.progress = (int(data.get("value", 0)), int(data.get("max", 0)),
                             str(data.get("node")))
    elif event.type == "execution_error":
        inflight.error = data
    elif event.type == "execution_interrupted":
        inflight.interrupted = True
    return False


class ProgressWriter:
    def __init__(self, store: Store, worker_id: str, *, interval_s: float, observer: Any,
                 monotonic: Callable[[], float]) -> None:
        self.store, self.worker_id, self.observer = store, worker_id, observer
        self.interval_s, self.monotonic = interval_s, monotonic

    def flush(self, inflight: Inflight, force: bool = False) -> None:
        """Write phase and step if they changed, at most every `interval_s` (a last
        step or a forced flush always goes)."""
        state = (inflight.phase, inflight.progress)
        if state == inflight.flushed_progress:
            return
        now = self.monotonic()
        done = inflight.progress is not None and inflight.progress[0] >= inflight.progress[1]
        if not force and not done and now - inflight.last_flush < self.interval_s:
            return
        had_steps = inflight.flushed_progress is not None and inflight.flushed_progress[1] is not None
        inflight.last_flush = now
        inflight.flushed_progress = state
        fields: dict[str, Any] = {"phase": inflight.phase}
        if inflight.progress is not None:
            value, maximum, node = inflight.progress
            fields.update(progress_value=value, progress_max=maximum, progress_node=node,
                          progress_at=iso(self.store.clock()))
        elif had_steps:  # a new node without steps yet: the last node's are not its own
            fields.update(progress_value=None, progress_max=None, progress_node=None)
        self.store.update(inflight.job.id, worker_id=self.worker_id, **fields)
        self.observer.job_changed(inflight)
