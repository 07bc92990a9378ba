"""The prompt step of a claimed job: when the job asks for enhancement and has
none yet, the local LLM writes its prompt (zmm.enhance) and the spool keeps it,
with an `enhanced` event; when Ollama cannot, an `enhance_skipped` event says why
and the job goes on with its own prompt, or fails if enhancement was required.

The decision is persisted once made, so a retry or a restarted worker binds the
same prompt and never asks Ollama again. Runs before the VRAM gate: on a shared
GPU the LLM answers first, then the swap unloads it for the image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zmm.config import Config
from zmm.errors import EnhanceFailed
from zmm.outcome import Outcome
from zmm.store import Job, Store
from zmm.timestamps import iso
from zmm.worker.outcomes import failed

# The LLM's request must end well inside the job's lease: the loop renews
# leases only between steps, and a lapsed lease hands the job to another worker.
LEASE_SHARE = 0.75


def wanted(job: Job) -> bool:
    """Whether the job still needs the LLM: it asks for it and nothing was decided."""
    return (job.request.enhance in ("on", "required") and not job.enhanced_prompt
            and not job.enhance_skipped)


class PromptStep:
    def __init__(self, store: Store, settings: Config, *, worker_id: str, lease_s: float,
                 make_enhancer: Callable[[Config], Any] | None = None) -> None:
        self.store, self.settings = store, settings
        self.worker_id, self.lease_s = worker_id, lease_s
        self.make_enhancer = make_enhancer
        self._enhancer: Any | None = None

    def close(self) -> None:
        if self._enhancer is not None:
            self._enhancer.close()
            self._enhancer = None

    def _get_enhancer(self) -> Any:
        if self._enhancer is None:
            if self.make_enhancer is not None:
                self._enhancer = self.make_enhancer(self.settings)
            else:
                from zmm.enhance import Enhancer

                self._enhancer = Enhancer(self.settings)
        return self._enhancer

    def prepare(self, job: Job) -> tuple[Job | None, Outcome | None]:
        """(the job to run on, or None if it is no longer this worker's; the
        outcome to record instead of running it, when enhancement was required)."""
        enhancer = self._get_enhancer()
        if not self.store.update(job.id, worker_id=self.worker_id, phase="enhancing prompt",
                                 phase_detail=enhancer.model):
            return None, None
        timeout = min(enhancer.timeout, self.lease_s * LEASE_SHARE)
        try:
            result = enhancer.for_job(job.request.values, prompt=job.prompt, style=job.style,
                                      seed=job.seed, timeout=timeout)
        except EnhanceFailed as exc:
            return self._without(job, enhancer.model, exc)
        kept = self.store.update(
            job.id, worker_id=self.worker_id, enhanced_prompt=result.prompt,
            lease_expires_at=iso(self.store.clock() + self.lease_s),
            event=("enhanced", f"prompt enhanced by {result.model} in {result.seconds:.1f}s"),
            data={"model": result.model, "seconds": round(result.seconds, 3),
                  "chars": len(result.prompt)})
        return (self.store.get(job.id) if kept else None), None

    def _without(self, job: Job, model: str,
                 exc: EnhanceFailed) -> tuple[Job | None, Outcome | None]:
        if job.request.enhance == "required":
            return job, failed(f"{exc.message} (--enhance=required)", "enhance")
        kept = self.store.update(
            job.id, worker_id=self.worker_id, enhance_skipped=exc.cause,
            lease_expires_at=iso(self.store.clock() + self.lease_s),
            event=("enhance_skipped", f"prompt not enhanced: {exc.cause}; going on with the "
                   "original prompt"),
            data={"model": model, "cause": exc.cause})
        return (self.store.get(job.id) if kept else None), None
