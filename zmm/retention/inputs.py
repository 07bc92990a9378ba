"""Init-image copies in a cleanup plan: a job's copy (inputs/<sha256>.<ext>) goes
with the job's files, unless another job that keeps its files still names it
(copies are content-addressed, so jobs with the same image share one).
"""

from __future__ import annotations

from collections.abc import Callable

from zmm.retention.plan import Plan, Removal
from zmm.store import Store


def attach(store: Store, plan: Plan, input_of: dict[str, str],
           size_of: Callable[[str], int | None]) -> None:
    """Add each copy no remaining job needs to one removal of a job that named it.
    `size_of`: the file's size, None if it is absent (or refused, which it records)."""
    removals = {item.job_id: item for item in plan.removals if item.job_id}
    removed = set(removals)
    users_of: dict[str, list[str]] = {}
    for job_id, relative in input_of.items():
        users_of.setdefault(relative, []).append(job_id)
    for relative, job_ids in sorted(users_of.items()):
        if not store.input_users(relative) <= removed:
            continue  # a job that keeps its files (pinned, queued, younger) still needs it
        size = size_of(relative)
        if size is None:
            continue
        item: Removal = removals[job_ids[0]]
        item.files = (*item.files, relative)
        item.size += size
