"""What one attempt at a job produced, whoever ran it (ComfyUI through
zmm.worker.execution, a cloud provider through zmm.cloud.lane, or `zmm
compose`): the `Outcome` the worker records, and saving a job's images all or
none (`save_images`) with the job columns describing them. The files are
written through zmm.assets, which also makes their zmm chunk.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from zmm import assets
from zmm.errors import ZmmError
from zmm.jobs import JobState
from zmm.jsontext import compact
from zmm.store import Job


class OutcomeKind(StrEnum):
    """How an attempt ended: finished in one of three states, or back to the queue."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REQUEUE = "requeue"

    @property
    def state(self) -> JobState:
        """The job's state once the outcome is written (a requeue: queued again)."""
        return JobState.QUEUED if self is OutcomeKind.REQUEUE else JobState(self.value)


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    message: str
    fields: dict[str, Any]  # job columns to write with it, and nothing else
    consume_attempt: bool = False
    backoff: bool = False
    fallback: str | None = None  # a failure the cloud may answer instead (zmm.cloud triggers)
    error_kind: str | None = None  # why, should it end the job failed (zmm.errors.ERROR_KINDS)
    oom: bool = False  # ComfyUI ran out of GPU memory: free it and try once more
    notices: list[str] = field(default_factory=list)  # job events (kind notice) to write with it


def save_image(assets_root: Path, job: Job, index: int, data: bytes, metadata: dict[str, Any],
               brands_dir: Path | None = None, notes: list[str] | None = None,
               ) -> tuple[assets.SavedFile, assets.SavedFile | None]:
    """Save one output of `job`: as it came, or, when the job asks for text,
    composed (zmm.compose) with the image as it came kept beside it. Returns
    (the output, its plain image or None); on failure nothing is left. Text cut
    or left out is said in `notes`."""
    relative = assets.relative_name(job.id, job.created_at, index)
    composition = job.request.composition
    if not composition:
        return assets.save_output(assets_root, relative, data, metadata), None
    from zmm import compose  # Pillow: only jobs with text pay for it

    folder = brands_dir if brands_dir is not None else Path(assets_root).parent / "brands"
    composed = compose.compose(data, composition, job.style, folder, notes)
    plain = assets.save_output(assets_root, compose.plain_name(relative), data, metadata)
    try:
        return assets.save_output(assets_root, relative, composed, metadata), plain
    except BaseException:
        plain.path.unlink(missing_ok=True)
        raise


@dataclass
class SavedImages:
    """Every file one job saved: its outputs, their plain images (composed jobs)
    and the first output's thumbnail, with the job columns describing them."""

    assets_root: Path
    outputs: list[assets.SavedFile] = field(default_factory=list)
    plains: list[assets.SavedFile] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # text that did not fit, once each

    def discard(self) -> None:
        """Remove every file saved so far: a job keeps all of its files or none."""
        thumbnail = self.fields.get("thumbnail_path")
        for item in self.outputs + self.plains:
            item.path.unlink(missing_ok=True)
        if thumbnail:
            assets.safe_path(self.assets_root, thumbnail).unlink(missing_ok=True)


def save_images(assets_root: Path, job: Job, images: Iterable[bytes], metadata: dict[str, Any],
                brands_dir: Path | None = None) -> SavedImages:
    """Save every image of `job` (each through `save_image`) and its thumbnail, all
    or none: when reading, composing or writing any of them fails, the files
    already written are removed before the error goes on. `images` may be lazy
    (fetched one by one); at least one image is expected."""
    saved = SavedImages(Path(assets_root))
    try:
        for index, data in enumerate(images):
            notes: list[str] = []
            output, plain = save_image(assets_root, job, index, data, metadata, brands_dir,
                                       notes)
            saved.notes.extend(note for note in notes if note not in saved.notes)
            saved.outputs.append(output)
            saved.plains.extend([plain] if plain is not None else [])
        saved.fields = output_fields(saved.outputs, assets_root, saved.plains)
    except BaseException:
        saved.discard()
        raise
    return saved


def output_fields(saved: list[assets.SavedFile], assets_root,
                  plains: list[assets.SavedFile] | None = None) -> dict[str, Any]:
    """The job columns describing its saved files (the first one has a thumbnail;
    `plains`: the images without text of a composed job)."""
    first = saved[0]
    return {"output_path": first.relative, "outputs": compact([item.relative for item in saved]),
            "file_size_bytes": first.size, "sha256": first.sha256, "width": first.width,
            "height": first.height, "thumbnail_path": thumbnail_for(first, assets_root),
            "plain_outputs": compact([item.relative for item in plains]) if plains else None}


def thumbnail_for(saved: assets.SavedFile, assets_root) -> str | None:
    """The history view's thumbnail; the image is what the job promised, so a
    thumbnail that cannot be made leaves the job succeeded without one."""
    from zmm.assets.thumbnails import make_thumbnail  # Pillow: only workers pay for it

    try:
        return make_thumbnail(saved.path, assets_root)
    except (ZmmError, OSError):
        return None

