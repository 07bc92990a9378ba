"""The VRAM gate between the spool and ComfyUI: before a job runs, gather the
facts (free VRAM from NVML, Ollama's loaded models), ask the scheduler, and
carry out its decision: downgrade the job, unload Ollama, or defer the job.

The swap is persisted in `spool_state` ("swap") before any model is unloaded,
so a worker killed mid-swap restores the same models when it starts again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zmm import families, jobs
from zmm.config import Config
from zmm.config.fleet import DEFAULT_NAME
from zmm.errors import ZmmError
from zmm.store import Job, Store
from zmm.timestamps import iso
from zmm.vram import policy

SWAP_KEY = "swap"  # the default backend's; others add their name (swap_key)


def swap_key(backend_name: str) -> str:
    """The spool_state key of one backend's swap: each Ollama is restored apart."""
    return SWAP_KEY if backend_name == DEFAULT_NAME else f"{SWAP_KEY}:{backend_name}"


@dataclass(frozen=True)
class Admission:
    job: Job | None  # the job to run (maybe downgraded); None when deferred or sent away
    message: str
    to_cloud: bool = False  # the job should go to a cloud provider instead


class VramGate:
    def __init__(self, store: Store, settings: Config, *, ollama: Any | None,
                 free_bytes: Callable[[], int | None], notice: Callable[[str], None],
                 monotonic: Callable[[], float] = time.monotonic, gpu_index: int | None = 0,
                 swap_state: str = SWAP_KEY,
                 unknown_reason: str = "NVML is not available: VRAM is not checked before jobs"
                 ) -> None:
        self.store, self.settings = store, settings
        self.ollama = ollama
        self.free_bytes = free_bytes  # the backend's own GPU (NVML index, or /system_stats)
        self.gpu_index = gpu_index  # None: a remote server, whose processes NVML cannot see
        self.swap_state, self.unknown_reason = swap_state, unknown_reason
        self.notice = notice
        self.monotonic = monotonic
        self.rules = policy.settings_from(settings)
        self._idle_since: float | None = None
        self._told: set[str] = set()
        self._ollama_retry_at = 0.0

    # -- before a job ------------------------------------------------------------

    def admit(self, job: Job, *, cloud_ok: bool = False) -> Admission:
        """What to do with a claimed job; `cloud_ok`: a provider could take it."""
        params = job.request
        if params.graph is not None and job.model_requested is None:
            return Admission(job, "custom workflow: VRAM not estimated")
        free = self._free()
        if free is None:  # nothing to compare with: don't ask Ollama on every job
            return Admission(job, "VRAM unknown (no NVML): not checked")
        llms = self._loaded_llms()
        waited = 0.0
        if job.vram_wait_ts:
            waited = max(0.0, self.store.clock() - job.vram_wait_ts)
        facts = policy.Facts(
            priority=job.priority, quality=job.quality_tier,
            model_key=params.model_key or families.model_family(job.model_requested or ""),
            model_pinned=params.model_pinned, free_bytes=free, llms=llms,
            waited_s=waited, cloud_allowed=cloud_ok and bool(job.cloud_allowed),
            precision=params.precision)
        decision = policy.decide(facts, self.rules)
        if decision.action == "cloud":
            return Admission(None, decision.reason, to_cloud=True)
        if decision.action == "run":
            return Admission(job, decision.reason)
        if decision.action == "downgrade":
            return Admission(self._downgrade(job, decision), decision.reason)
        if decision.action == "unload":
            self._unload(job, decision)
            return Admission(self.store.get(job.id), decision.reason)
        return self._defer(job, decision)

    def _free(self) -> int | None:
        free = self.free_bytes()
        if free is None:
            self._once("nvml", self.unknown_reason)
        return free

    def _loaded_llms(self) -> list[policy.LoadedLlm] | None:
        if self.ollama is None:
            self._once("ollama-off", "Ollama is not configured: no VRAM swap")
            return None
        if self.monotonic() < self._ollama_retry_at:
            return None
        try:
            loaded = self.ollama.ps()
        except ZmmError as exc:
            # Ask again in a while, not before every job: a dead host costs a timeout.
            self._ollama_retry_at = self.monotonic() + 30.0
            self._once("ollama-down", f"Ollama unreachable ({exc.message}): no VRAM swap")
            return None
        return [policy.LoadedLlm(m.name, m.size_vram, self._keep_alive(m)) for m in loaded]

    def _keep_alive(self, model: Any) -> Any:
        from zmm.backends.ollama import normalize_keep_alive

        return normalize_keep_alive(model.expires_at,
                                    default=self.settings.get("ollama.reload_keep_alive"))

    def _downgrade(self, job: Job, decision: policy.Decision) -> Job:
        return downgrade_to_sd15(self.store, self.settings, job, decision.reason)

    def _defer(self, job: Job, decision: policy.Decision) -> Admission:
        if not job.vram_wait_ts:  # the first time: when the wait began, and why
            self.store.update(job.id, vram_wait_ts=self.store.clock(),
                              event=("vram_wait", decision.reason))
        return Admission(None, decision.reason)

    # -- the swap ------------------------------------------------------------------

    def _unload(self, job: Job, decision: policy.Decision) -> None:
        assert self.ollama is not None, "an unload is decided only from Ollama's loaded models"
        state = (self.store.get_state(self.swap_state)
                 or {"models": [], "job_id": job.id, "since": iso(self.store.clock())})
        known = {m["name"] for m in state["models"]}
        state["models"] += [{"name": llm.name, "keep_alive": llm.keep_alive}
                            for llm in decision.unload if llm.name not in known]
        self.store.set_state(self.swap_state, state)  # before unloading: a crash still restores
        self.store.add_event(job.id, "swap", decision.reason,
                             {"unload": [llm.name for llm in decision.unload]})
        for llm in decision.unload:
            try:
                self.ollama.unload(llm.name)
            except ZmmError as exc:
                self.store.add_event(job.id, "swap", f"unloading {llm.name} failed: {exc.message}")
        result = self.ollama.wait_released(
            [llm.name for llm in decision.unload],
            timeout=self.settings.get("ollama.unload_timeout_s"),
            vram_free=self.free_bytes, need_bytes=decision.need_bytes)
        if result.released:
            self.store.add_event(job.id, "swap", f"released in {result.waited_s:.1f}s")
        else:
            holders = self._holders()
            message = (f"Ollama did not release {', '.join(result.still_loaded) or 'its memory'} "
                       f"within {result.waited_s:.0f}s{holders}; running anyway")
            self.store.add_event(job.id, "swap_stuck", message)
            self.notice(message)

    def _holders(self) -> str:
        from zmm.backends import gpu

        if self.gpu_index is None:
            return ""
        try:
            procs = [p for g in gpu.snapshot().gpus if g.index == self.gpu_index
                     for p in g.processes if p.role == "ollama"]
        except ZmmError:
            return ""
        return "; held by " + ", ".join(f"pid {p.pid} ({p.name})" for p in procs) if procs else ""

    def maybe_restore(self, has_image_work: bool) -> None:
        """Reload the swapped-out models once image work has stopped for a moment."""
        state = self.store.get_state(self.swap_state)
        if not state or self.ollama is None:
            return
        if has_image_work:
            self._idle_since = None
            return
        now = self.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < self.settings.get("ollama.queue_end_delay_s"):
            return
        restored = []
        for model in state["models"]:
            try:
                self.ollama.load(model["name"], keep_alive=model.get("keep_alive"))
                restored.append(model["name"])
            except ZmmError as exc:
                self.notice(f"could not reload {model['name']}: {exc.message}")
        self.store.set_state(self.swap_state, None)
        self._idle_since = None
        if state.get("job_id"):
            self.store.add_event(state["job_id"], "reload", "reloaded " + ", ".join(restored))
        self.notice("reloaded Ollama models: " + (", ".join(restored) or "none"))

    def _once(self, key: str, text: str) -> None:
        if key not in self._told:
            self._told.add(key)
            self.notice(text)


def downgrade_to_sd15(store: Store, settings: Config, job: Job, reason: str) -> Job:
    """Move a running job to SD1.5 at the same aspect ratio, with a `downgrade` event.
    The columns change (`downgraded_from` keeps what it asked for); its params
    stay as queued and read as SD1.5 through `Job.request`."""
    width, height = sd15_size(job.width or 1024, job.height or 1024)
    checkpoint = settings.get("models.sd15")
    store.update(job.id, downgraded_from=job.model_requested or job.request.model_key or "sdxl",
                 model_requested=checkpoint, width=width, height=height,
                 workflow=settings.get("templates.sd15"), event=("downgrade", reason),
                 data={"from": job.model_requested, "to": checkpoint})
    return store.get(job.id)


def can_downgrade(job: Job) -> bool:
    params = job.request
    return (params.model_key == "sdxl" and not params.model_pinned
            and job.quality_tier in policy.DOWNGRADABLE_TIERS and params.graph is None)


def sd15_size(width: int, height: int) -> tuple[int, int]:
    """The SD1.5 size of the same aspect ratio (half the SDXL side, multiple of 8)."""
    for aspect, size in jobs.ASPECTS["sdxl"].items():
        if size == (width, height):
            return jobs.ASPECTS["sd15"][aspect]
    return max(64, width // 2 // 8 * 8), max(64, height // 2 // 8 * 8)
