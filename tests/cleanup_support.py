"""Building spools for the cleanup tests: jobs moved to a finished state through
the store (with a clock set in the past, so they are old) and real small PNGs
(with the zmm chunk) and WebP thumbnails under `$ZMM_HOME/assets/images/YYYY-MM/`."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

from zmm import assets, intake
from zmm.assets import thumbnails
from zmm.jobs import JobState
from zmm.store import Job, Store

DAY = 86400.0


def png_bytes(width: int = 64, height: int = 48, colour=(200, 40, 40)) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def make_job(settings, *, age_days: float = 40, status: str = "succeeded", outputs: int = 1,
             thumbnail: bool = True, prompt: str = "a lighthouse", size=(64, 48),
             stored_path: str | None = None) -> Job:
    """A job that finished `age_days` ago; succeeded ones get real image files
    (`stored_path`: the row names this instead, as a damaged or hostile row could)."""
    at = time.time() - age_days * DAY
    root = settings.assets_dir
    with Store(settings.spool_path, clock=lambda: at) as store:
        job = store.enqueue(intake.build({"prompt": prompt}, settings))[0]
        store.claim("test-worker", lease_s=60, aging_s=600, only_ids=[job.id])
        if status == "running":
            return store.get(job.id)
        fields = {}
        if status == "succeeded":
            metadata = {"job_id": job.id, "prompt": prompt, "seed": job.seed, "width": job.width,
                        "height": job.height, "steps": job.steps, "quality": job.quality_tier}
            saved = [assets.save_output(root, assets.relative_name(job.id, job.created_at, index),
                                        png_bytes(*size), metadata)
                     for index in range(outputs)]
            fields = {"output_path": saved[0].relative, "file_size_bytes": saved[0].size,
                      "sha256": saved[0].sha256,
                      "outputs": json.dumps([item.relative for item in saved])}
            if thumbnail:
                fields["thumbnail_path"] = thumbnails.make_thumbnail(saved[0].path, root)
            if stored_path is not None:
                fields.update(output_path=stored_path, outputs=json.dumps([stored_path]))
        return store.transition(job.id, JobState(status), expect=JobState.RUNNING, **fields)


def make_queued(settings, prompt: str = "still waiting") -> Job:
    with Store(settings.spool_path) as store:
        return store.enqueue(intake.build({"prompt": prompt}, settings))[0]


def job_files(settings, job: Job) -> list[Path]:
    names = list(job.output_list) + ([job.thumbnail_path] if job.thumbnail_path else [])
    return [settings.assets_dir / name for name in names]


def age_file(path: Path, days: float = 2) -> None:
    """Orphans younger than an hour are left alone; make a file look older."""
    old = time.time() - days * DAY
    os.utime(path, (old, old))


def all_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if path.is_file() or path.is_symlink()}
