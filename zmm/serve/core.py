"""The service behind every front end of `zmm serve` and `zmm mcp`: submitting
a request through the same intake as `zmm generate`, reading jobs, the queue,
history, backends, models and the GPU, cancelling and retrying with the
caller's rights, and waiting for jobs. A thin layer over zmm.intake, zmm.store
and zmm.views: no job model of its own, no SQL.

Blocking calls (the spool, the servers) run on worker threads, each with its own
Store connection; `wait` polls from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmm.config import Config
from zmm.errors import InvalidInput, TimedOut, ZmmError
from zmm.jobs import PRIORITY_RANK, Priority, parse_priority
from zmm.store import Job, Store

POLL_S = 0.25
MAX_WAIT_S = 3600.0


class Forbidden(ZmmError):
    """The caller's token does not allow this (another requester's job, a higher priority)."""


@dataclass(frozen=True)
class Principal:
    """Who calls: a token's limits (None: no limit). The local `zmm mcp` has none."""

    name: str
    requester: str | None = None
    max_priority: str | None = None

    def check_job(self, job: Job) -> None:
        if self.requester is not None and job.requester != self.requester:
            raise Forbidden(f"job {job.id} belongs to requester {job.requester!r}; this token "
                            f"acts for {self.requester!r} only")

    def request(self, raw: dict[str, Any], default_priority: str) -> dict[str, Any]:
        """The request with this principal's requester and a priority within its ceiling."""
        raw = dict(raw)
        if self.requester is not None:
            asked = raw.get("requester")
            if asked not in (None, "", self.requester):
                raise Forbidden(f"requester: this token acts for {self.requester!r} only")
            raw["requester"] = self.requester
        if self.max_priority is not None:
            ceiling = Priority(self.max_priority)
            if raw.get("priority") in (None, ""):
                default = parse_priority(default_priority)
                raw["priority"] = max(default, ceiling, key=lambda p: PRIORITY_RANK[p]).value
            elif PRIORITY_RANK[parse_priority(str(raw["priority"]))] < PRIORITY_RANK[ceiling]:
                raise Forbidden(f"priority: this token may ask for {ceiling.value} at most")
        return raw


LOCAL = Principal("local")
Progress = Callable[[list[Job]], Awaitable[None]]


class Service:
    def __init__(self, settings: Config) -> None:
        self.settings = settings
        self.assets_root: Path = settings.assets_dir
        self._local = threading.local()
        self._stores: list[Store] = []
        self._lock = threading.Lock()

    # -- the spool, one connection per thread ------------------------------------

    def store(self) -> Store:
        store = getattr(self._local, "store", None)
        if store is None:
            store = Store(self.settings.spool_path,
                          busy_timeout_ms=self.settings.get("spool.busy_timeout_ms"),
                          assets_root=self.assets_root)
            self._local.store = store
            with self._lock:
                self._stores.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._stores:
                store.close()
            self._stores.clear()

    # -- writes ------------------------------------------------------------------

    def submit(self, raw: dict[str, Any], principal: Principal = LOCAL,
               init_image: bytes | None = None) -> list[Job]:
        """Queue one request (`count` jobs), as `zmm generate --no-wait` would;
        `init_image`: the bytes of an uploaded image for image-to-image."""
        from zmm import intake
        from zmm.config import fleet
        from zmm.intake import server_files

        fleet.backends(self.settings)
        raw = principal.request({k: v for k, v in raw.items() if v not in (None, [])},
                                self.settings.get("generate.priority"))
        with _uploaded(init_image) as path:
            if path is not None:
                raw["init_image"] = str(path)
            specs = intake.build(raw, self.settings)
            store = self.store()
            server_files.check_server_files(specs, self.settings, store.backends())
            _keep_inputs(specs, self.assets_root)
        return store.enqueue(specs)

    def cancel(self, job_id: str, principal: Principal = LOCAL) -> dict[str, Any]:
        store = self.store()
        job = store.get(job_id)
        principal.check_job(job)
        (result,) = store.cancel([job.id])
        if result.result == "cancelled" and job.webhook_url:
            from zmm.worker.webhooks import deliver_due

            deliver_due(store, [job.id], settings=self.settings,
                        budget_s=self.settings.get("webhooks.timeout_s"))
        return {"id": result.id, "result": result.result, "status": str(result.status),
                "refused": result.refused}

    def retry(self, job_id: str, principal: Principal = LOCAL) -> Job:
        store = self.store()
        job = store.get(job_id)
        principal.check_job(job)
        return store.retry([job.id])[0]

    def again(self, job_id: str, principal: Principal = LOCAL) -> list[Job]:
        """Queue a job's request again: its prompt, size, model, seed and style."""
        job = self.get(job_id)
        params = job.request
        raw = {"prompt": params.user_prompt or job.prompt,
               "negative": job.negative_prompt, "style": job.style,
               "model": job.model_requested if params.model_pinned else None,
               "size": f"{job.width}x{job.height}" if job.width and job.height else None,
               "seed": job.seed, "steps": job.steps, "priority": job.priority,
               "requester": job.requester}
        if principal.requester is None and principal.max_priority is None:
            return self.submit(raw, principal)
        return self.submit(dict(raw, priority=None), principal)

    def compose(self, job_id: str, raw: dict[str, Any], principal: Principal = LOCAL) -> Job:
        """A new job: `job_id`'s image without its text, with other text (`zmm compose`)."""
        from zmm import recompose

        job = self.get(job_id)
        principal.check_job(job)
        return recompose.recompose(self.store(), self.settings, job.id, raw)

    # -- reads -------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        return self.store().get(job_id)

    def get_many(self, job_ids: list[str]) -> list[Job]:
        return self.store().get_many(job_ids)

    def public(self, job: Job) -> dict[str, Any]:
        return job.public(self.assets_root)

    def detail(self, job_id: str) -> dict[str, Any]:
        """A job, its parameters and its event timeline (`zmm history show --json`)."""
        store = self.store()
        job = store.get(job_id)
        return {"job": self.public(job), "params": job.shown_params(),
                "events": store.events(job.id)}

    def queue(self, *, with_finished: bool = False) -> dict[str, Any]:
        from zmm.views import queue

        return queue.read(self.store(), self.settings,
                          with_finished=with_finished).public(self.assets_root)

    def history(self, *, statuses: tuple[str, ...] = (), requester: str | None = None,
                model: str | None = None, search: str | None = None,
                style: str | None = None, since_iso: str | None = None,
                until_iso: str | None = None, limit: int = 20,
                offset: int = 0) -> tuple[list[Job], int]:
        """A page of jobs, newest first, and how many match. `style` and `until_iso`
        are applied to the page the spool returns (the spool's filter has neither)."""
        from zmm.store import HistoryFilter

        store = self.store()
        if style is None and until_iso is None:
            return store.history_page(HistoryFilter(
                statuses=statuses, requester=requester, model=model, search=search or None,
                since_iso=since_iso, limit=limit, offset=offset))
        page, _ = store.history_page(HistoryFilter(
            statuses=statuses, requester=requester, model=model, search=search or None,
            since_iso=since_iso, limit=1000, offset=0))
        kept = [job for job in page if (style is None or job.style == style)
                and (until_iso is None or job.created_at < until_iso)]
        return kept[offset:offset + limit], len(kept)

    def backends(self) -> list[dict[str, Any]]:
        from zmm.views import roster

        return roster.overview(self.settings, self.store())

    def models(self) -> dict[str, Any]:
        """The model aliases, the files each backend reported (checkpoints, LoRAs, ...)
        as recorded in the spool, and the local LLMs when Ollama answers."""
        from zmm import families

        files: dict[str, set[str]] = {}
        for row in self.store().backends():
            for entry in row.get("files") or []:
                folder, _, name = str(entry).partition("/")
                files.setdefault(folder, set()).add(name)
        llms: list[str] = []
        errors: list[str] = []
        if self.settings.get("ollama.enabled"):
            from zmm.backends.ollama import OllamaClient

            try:
                with OllamaClient(self.settings.get("ollama.url"), timeout=3) as client:
                    llms = [model.name for model in client.tags()]
            except ZmmError as exc:
                errors.append(exc.message)
        return {"aliases": families.model_aliases(self.settings.section("models")),
                "files": {folder: sorted(names) for folder, names in sorted(files.items())},
                "checkpoints": sorted(files.get("checkpoints", ())),
                "loras": sorted(files.get("loras", ())), "llms": llms, "errors": errors}

    def gpu(self) -> dict[str, Any]:
        """NVML's view of the GPUs (None with the reason when there is none) and
        each backend's recorded GPU memory."""
        import dataclasses

        from zmm.backends import gpu

        try:
            snap: Any = dataclasses.asdict(gpu.snapshot())
            problem = None
        except ZmmError as exc:
            snap, problem = None, exc.message
        memory = [{key: entry[key] for key in ("name", "state", "gpu", "vram_free_bytes",
                                               "vram_total_bytes", "loaded_model")}
                  for entry in self.backends()]
        return {"nvml": snap, "nvml_error": problem, "backends": memory}

    # -- waiting -----------------------------------------------------------------

    async def wait(self, job_ids: list[str], *, timeout: float | None,
                   on_change: Progress | None = None) -> list[Job]:
        """Until every job has finished (TimedOut after `timeout` s); `on_change`
        hears the jobs each time one moves (state, phase or progress)."""
        limit = MAX_WAIT_S if timeout is None else timeout
        if not 0 < limit <= MAX_WAIT_S:
            raise InvalidInput("timeout", f"seconds, greater than 0 and at most {MAX_WAIT_S:g}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        seen: tuple = ()
        while True:
            jobs = await asyncio.to_thread(self.get_many, job_ids)
            key = tuple((job.status, job.phase, job.progress_value) for job in jobs)
            if key != seen and on_change is not None:
                await on_change(jobs)
            seen = key
            if all(job.finished for job in jobs):
                return jobs
            if loop.time() >= deadline:
                pending = [job.id for job in jobs if not job.finished]
                raise TimedOut(f"timed out after {limit:g}s; still unfinished: "
                               + ", ".join(pending))
            await asyncio.sleep(POLL_S)


def _keep_inputs(specs: list[Any], assets_root: Path) -> None:
    """zmm's own copies of the init images, before any job names them."""
    if any(spec.inputs for spec in specs):
        from zmm.assets import inputs

        for image in {image.sha256: image for spec in specs for image in spec.inputs}.values():
            inputs.keep(assets_root, image)


@contextlib.contextmanager
def _uploaded(data: bytes | None) -> Iterator[Path | None]:
    """An uploaded image as a private temporary file, for intake to read and check."""
    if data is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="zmm-upload-") as folder:
        path = Path(folder) / "upload"
        path.write_bytes(data)
        yield path
