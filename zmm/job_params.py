"""A job's request, typed: the `params` column parsed once per job into a
`JobParams`, which every module reads instead of its own part of the JSON.

`params` is written once, when the job is queued (JobSpec.stored_params), and
never again: what a worker later decides about the job has columns of its own
(oom_retried, enhance_skipped, vram_wait_ts, downgraded_from; see
spool/migrations/0017). A downgrade to SD1.5 is the one decision that changes
what is bound, so `parse` lays it over the request here, in one place.

Pure: no I/O, no SQL.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

# What a job's model files besides its model are called in params (split
# families: text encoders, VAE, weight dtype); zmm.families.FILE_KEYS.
FILE_KEYS = ("clip_l", "clip_g", "t5xxl", "vae", "weight_dtype")
# The request values the PNG chunk records as they are when a job has them.
PART_KEYS = ("loras", "init_image", "denoise", "upscale", "enhance", "compose")


@dataclass(frozen=True)
class Downgrade:
    """The SD1.5 job a downgraded one became (its model_requested, width, height)."""

    checkpoint: str | None
    width: int | None
    height: int | None


@dataclass(frozen=True)
class JobParams:
    """The values a job was queued with (after a downgrade: the SD1.5 ones)."""

    values: Mapping[str, Any]  # every stored value, read-only: what a template binds

    @classmethod
    def parse(cls, text: str, downgrade: Downgrade | None = None) -> JobParams:
        values = json.loads(text)
        if not isinstance(values, dict):
            values = {}
        if downgrade is not None:
            values.update(model_key="sd15", family="sd15", loader="checkpoint",
                          precision="fp16", checkpoint=downgrade.checkpoint)
            if downgrade.width and downgrade.height:
                values.update(width=downgrade.width, height=downgrade.height)
        return cls(MappingProxyType(values))

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def as_dict(self) -> dict[str, Any]:
        """A copy of the values (to bind, print, or queue a new job from)."""
        return dict(self.values)

    @property
    def prompt(self) -> str:
        """The styled prompt (the `prompt` column is what the user typed)."""
        return str(self.values.get("prompt") or "")

    @property
    def user_prompt(self) -> str:
        return str(self.values.get("user_prompt") or "")

    @property
    def negative(self) -> str:
        return str(self.values.get("negative") or "")

    @property
    def model_key(self) -> str | None:
        return self.values.get("model_key")

    @property
    def family(self) -> str | None:
        """The model family: recorded, else the alias the job was asked with."""
        return self.values.get("family") or self.values.get("model_key")

    @property
    def model_pinned(self) -> bool:
        return bool(self.values.get("model_pinned"))

    @property
    def precision(self) -> str:
        return str(self.values.get("precision") or "fp16")

    @property
    def graph(self) -> dict[str, Any] | None:
        """A custom workflow's own graph (None: the job binds a template)."""
        graph = self.values.get("graph")
        return graph if isinstance(graph, dict) else None

    @property
    def enhance(self) -> str:
        """off, on or required (docs/enhance.md)."""
        return str(self.values.get("enhance") or "off")

    @property
    def max_run_s(self) -> float | None:
        """The job's own maximum run time on ComfyUI (`--max-run-s`), if it has one."""
        value = self.values.get("max_run_s")
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def composition(self) -> dict[str, Any] | None:
        """The text and brand drawn onto the job's images, if any."""
        value = self.values.get("compose")
        return value if isinstance(value, dict) else None

    @property
    def model_files(self) -> dict[str, Any]:
        """The split files (text encoders, VAE, weight dtype) a job loads besides its model."""
        return {key: self.values[key] for key in FILE_KEYS if self.values.get(key) is not None}

    @property
    def parts(self) -> dict[str, Any]:
        """The LoRAs, init image, hires pass, enhancement and text the job asked for."""
        return {key: self.values[key] for key in PART_KEYS if self.values.get(key) is not None}
