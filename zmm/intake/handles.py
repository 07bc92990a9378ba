"""The handles a script gives one command's jobs, made unique before queueing:
names (one job each: they name files under `--out`) and idempotency keys
(numbered when several jobs share one).
"""

from __future__ import annotations

from zmm import jobs
from zmm.errors import InvalidInput


def number_handles(specs: list[jobs.JobSpec]) -> list[jobs.JobSpec]:
    """The handles of one command's jobs made unique: a key shared by several jobs
    (`--key K --count 3`, lines without a key of their own) becomes K#1, K#2, ...
    in order; a name may name one job only (it names files under --out)."""
    names: set[str] = set()
    for spec in specs:
        if spec.name in names:
            raise InvalidInput("name", f"{spec.name!r} names two jobs; a name names one job")
        if spec.name:
            names.add(spec.name)
    shared: dict[str, int] = {}
    for spec in specs:
        if spec.key:
            shared[spec.key] = shared.get(spec.key, 0) + 1
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.key and shared[spec.key] > 1:
            seen[spec.key] = seen.get(spec.key, 0) + 1
            spec.key = f"{spec.key}#{seen[spec.key]}"
    return specs
