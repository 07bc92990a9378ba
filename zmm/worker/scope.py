"""What a worker takes on and when it is done: serve forever, `--once` (what is
queued and due), `--max-jobs N`, only some jobs (an inline `generate` that must
not disturb others), or the whole queue until some jobs have finished (an
inline `generate` holding the lock). Counts claims; asks the spool, never writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from zmm.store import Store


@dataclass
class Scope:
    once: bool = False
    max_jobs: int | None = None
    only_ids: list[str] | None = None  # claim only these
    until_finished: list[str] | None = None  # claim anything until these have finished
    claimed: int = 0

    @property
    def foreground(self) -> bool:
        """Someone waits for this worker to end: ComfyUI down is reported, not waited out."""
        return self.once or self.only_ids is not None or self.until_finished is not None

    @property
    def waited_for(self) -> list[str] | None:
        """The jobs whose end a foreground worker waits for."""
        return self.only_ids if self.until_finished is None else self.until_finished

    def budget(self) -> int | None:
        """How many more jobs may be claimed (None: no limit)."""
        return None if self.max_jobs is None else max(self.max_jobs - self.claimed, 0)

    def may_claim(self) -> bool:
        return self.max_jobs is None or self.claimed < self.max_jobs

    def close_if_waited_for_done(self, store: Store) -> None:
        """Once the jobs it waits for have finished, claim no more (what is in
        flight still finishes)."""
        if self.until_finished is not None and self.max_jobs is None and all(
                job.finished for job in store.get_many(self.until_finished)):
            self.max_jobs = self.claimed

    def nothing_left(self, store: Store) -> bool:
        """With nothing in flight: whether this worker's work is done."""
        if not self.may_claim():
            return True
        if self.only_ids is not None:
            return all(job.finished for job in store.get_many(self.only_ids))
        return self.once
