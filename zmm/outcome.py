"""What one attempt at a job produced, whoever ran it (ComfyUI through
zmm.worker.execution, a cloud provider through zmm.cloud.lane): the `Outcome`
the worker records, the job columns of the saved files, and the zmm metadata
written into each image. No I/O but the thumbnail written beside a saved file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import zmm
from zmm import assets, families
from zmm.errors import ZmmError
from zmm.jsontext import compact
from zmm.store import Job


@dataclass(frozen=True)
class Outcome:
    kind: str  # succeeded | failed | cancelled | requeue
    message: str
    fields: dict[str, Any]
    consume_attempt: bool = False
    backoff: bool = False
    fallback: str | None = None  # a failure the cloud may answer instead (zmm.cloud triggers)


def zmm_metadata(job: Job) -> dict[str, Any]:
    """The zmm chunk of a saved PNG: enough to queue the same job again
    (`--from-image`), the model's family and every file it loaded included."""
    params = job.param_values
    return {"job_id": job.id, "prompt": job.prompt, "negative": job.negative_prompt,
            "seed": job.seed, "model": job.model_requested, "width": job.width,
            "height": job.height, "steps": job.steps, "cfg": params.get("cfg"),
            "sampler": params.get("sampler"), "scheduler": params.get("scheduler"),
            "quality": job.quality_tier, "style": job.style, "workflow": job.workflow,
            "family": params.get("family") or params.get("model_key"),
            "loader": params.get("loader"), "files": model_files_of(params),
            "guidance": params.get("guidance"), "shift": params.get("shift"),
            "priority": job.priority, "requester": job.requester, "zmm_version": zmm.__version__,
            **{key: params[key] for key in ("loras", "init_image", "denoise", "upscale",
                                            "enhance") if params.get(key) is not None},
            **({"enhanced_prompt": job.enhanced_prompt} if job.enhanced_prompt else {})}


def model_files_of(params: dict[str, Any]) -> dict[str, Any]:
    """The split files (text encoders, VAE, weight dtype) a job loads besides its model."""
    return {key: params[key] for key in families.FILE_KEYS if params.get(key) is not None}


def output_fields(saved: list[assets.SavedFile], assets_root) -> dict[str, Any]:
    """The job columns describing its saved files (the first one has a thumbnail)."""
    first = saved[0]
    return {"output_path": first.relative, "outputs": compact([item.relative for item in saved]),
            "file_size_bytes": first.size, "sha256": first.sha256, "width": first.width,
            "height": first.height, "thumbnail_path": thumbnail_for(first, assets_root)}


def thumbnail_for(saved: assets.SavedFile, assets_root) -> str | None:
    """The history view's thumbnail; the image is what the job promised, so a
    thumbnail that cannot be made leaves the job succeeded without one."""
    from zmm.assets.thumbnails import make_thumbnail  # Pillow: only workers pay for it

    try:
        return make_thumbnail(saved.path, assets_root)
    except (ZmmError, OSError):
        return None

