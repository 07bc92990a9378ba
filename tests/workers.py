"""Workers for in-process tests: `make_worker` takes the pieces a test varies as
keywords and builds the Worker through zmm's own factory (assembly.build_worker)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from zmm.worker.assembly import Clock, Equipment, build_worker
from zmm.worker.loop import Worker
from zmm.worker.scope import Scope


def make_worker(store, client, settings, *, observer: Any = None, once: bool = False,
                max_jobs: int | None = None, only_ids: list[str] | None = None,
                until_finished: list[str] | None = None, gate: Any = None, vram: Any = None,
                vram_used: Callable[[], int | None] | None = None, cloud_lane: Any = None,
                supervisor: Any = None, make_enhancer: Any = None,
                monotonic: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] | None = None,
                holds_lock: bool = False) -> Worker:
    return build_worker(
        settings, store, client,
        scope=Scope(once=once, max_jobs=max_jobs, only_ids=only_ids,
                    until_finished=until_finished),
        observer=observer, clock=Clock(monotonic=monotonic, sleep=sleep), holds_lock=holds_lock,
        equipment=Equipment(gate=gate, vram=vram, vram_used=vram_used, cloud_lane=cloud_lane,
                            supervisor=supervisor, make_enhancer=make_enhancer))
