"""`zmm compose`: an existing job's image composed again with other text or
another brand, without generating anything: a new job, succeeded at once,
that names its source (`source_job_id`) and keeps its own copy of the image
without text. Checks everything before a file or a row is written.
"""

from __future__ import annotations

import dataclasses
import time
from io import BytesIO
from typing import Any

from zmm import assets, compose
from zmm.config import Config
from zmm.errors import Conflict, InvalidInput, NotFound
from zmm.jobs import JobState
from zmm.jsontext import compact
from zmm.outcome import save_images
from zmm.store import Job, Store
from zmm.timestamps import iso


def recompose(store: Store, settings: Config, source_id: str, raw: dict[str, Any],
              clock=time.monotonic) -> Job:
    """The new job: `source_id`'s image without text, with `raw`'s title,
    subtitle, footer and brand."""
    started = clock()
    source = store.get(source_id)
    images = _plain_images(store, source)
    composition = compose.from_request(raw, settings.brands_dir)
    if composition is None:
        raise InvalidInput("title", "give --title, --subtitle or --footer (the text to draw)")
    job_id = store.new_job_id()
    params = dict(source.request.as_dict(), compose=composition)
    job = dataclasses.replace(source, id=job_id, params=compact(params),
                              created_at=iso(store.clock()), status=JobState.SUCCEEDED)
    saved = save_images(store.assets_root, job, images, assets.metadata_for(job),
                        settings.brands_dir)
    try:
        # No generation_time_s: nothing was generated, and `zmm stats` times generations.
        job = store.add_composed(job_id, source.id, params, saved.fields,
                                 f"composed from {source.id} with brand {composition['brand']} "
                                 f"in {clock() - started:.3f} s")
    except BaseException:
        saved.discard()  # no row: none of its files either
        raise
    for note in saved.notes:
        store.add_event(job.id, "notice", note)
    return job


def _plain_images(store: Store, source: Job) -> list[bytes]:
    """The source's images without text (a job without text: its images), as PNG."""
    if source.status is not JobState.SUCCEEDED:
        raise Conflict(f"job {source.id} is {source.status}; only a succeeded job has an image "
                       "to compose onto")
    if source.asset_deleted_at:
        raise NotFound(f"job {source.id}'s images were deleted by cleanup at "
                       f"{source.asset_deleted_at}; there is nothing to compose onto")
    names = source.plain_list or source.output_list or \
        ([source.output_path] if source.output_path else [])
    if not names:
        raise Conflict(f"job {source.id} saved no image to compose onto")
    images = []
    for name in names:
        try:
            data = assets.safe_path(store.assets_root, name).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"job {source.id}'s image {name} is no longer in the assets "
                           "folder; there is nothing to compose onto") from None
        images.append(data if data.startswith(assets.PNG_SIGNATURE) else _as_png(data, name))
    return images


def _as_png(data: bytes, name: str) -> bytes:
    """A JPEG `zmm cleanup --compress-older-than` made, as PNG (its zmm comment kept)."""
    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as image:
            out = BytesIO()
            image.convert("RGB").save(out, "PNG")
    except OSError as exc:
        raise Conflict(f"{name} cannot be read as an image ({exc})") from None
    comments = assets.jpeg_comments(data) if data.startswith(assets.JPEG_SIGNATURE) else {}
    png = out.getvalue()
    for key, text in sorted(comments.items()):
        png = assets.add_text_chunk(png, key, text)
    return png
