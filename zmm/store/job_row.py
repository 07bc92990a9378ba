"""One row of `jobs` as a `Job`: its fields in the table's column order (so a
`SELECT *` row fills it positionally), the derived views of its JSON columns,
and the stable JSON shape `--json` prints (`public`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmm.job_params import Downgrade, JobParams
from zmm.jobs import FINISHED, JobState


@dataclass(frozen=True)
class Job:
    """One row of `jobs`, as stored (see spool/migrations/0001_initial.sql)."""

    seq: int
    id: str
    request_type: str
    status: JobState
    priority: str
    priority_rank: int
    prompt: str
    negative_prompt: str
    requester: str
    quality_tier: str | None
    style: str | None
    workflow: str
    model_requested: str | None
    params: str
    seed: int | None
    width: int | None
    height: int | None
    steps: int | None
    webhook_url: str | None
    batch_id: str | None
    backend: str | None
    model_used: str | None
    generation_time_s: float | None
    vram_used_gb: float | None
    cost_usd: float | None
    output_path: str | None
    outputs: str | None
    output_url: str | None
    file_size_bytes: int | None
    sha256: str | None
    thumbnail_path: str | None
    created_at: str
    queued_at: str
    queued_ts: float
    started_at: str | None
    completed_at: str | None
    updated_at: str
    error_message: str | None
    attempts: int
    retry_count: int
    not_before: str | None
    worker_id: str | None
    lease_expires_at: str | None
    comfy_prompt_id: str | None
    comfy_url: str | None
    submitted_at: str | None
    phase: str | None
    phase_detail: str | None
    progress_value: int | None
    progress_max: int | None
    progress_node: str | None
    progress_at: str | None
    cancel_requested_at: str | None
    pinned: int
    asset_deleted_at: str | None
    passed_over: int = 0
    model: str | None = None  # generated: model_used, else model_requested
    backend_requested: str = "auto"  # auto | local | cloud
    cloud_allowed: int = 0
    enqueued_note: str | None = None  # the `enqueued` event's message (schema 7 on)
    on_backend: str | None = None  # pinned with `zmm generate --on NAME` (schema 10 on)
    needs: str | None = None  # JSON list of 'folder/name' model files the graph loads
    plain_outputs: str | None = None  # the images without text, beside `outputs` (schema 11)
    source_job_id: str | None = None  # the job `zmm compose` composed again
    enhanced_prompt: str | None = None  # the local LLM's prompt (schema 12 on)
    error_kind: str | None = None  # why it failed, a zmm.errors.ERROR_KINDS word (schema 13)
    backend_name: str | None = None  # the backend whose worker claimed or adopted it (schema 16)
    # What workers decided about the job (schema 17 on); `params` is never rewritten.
    oom_retried: int = 0  # 1: ran out of GPU memory once already
    enhance_skipped: str | None = None  # why the local LLM could not enhance its prompt
    vram_wait_ts: float | None = None  # when the VRAM gate first held it back
    downgraded_from: str | None = None  # the model asked for, before the gate chose SD1.5
    name: str | None = None  # `--out` calls its images NAME.png (schema 18 on)
    idempotency_key: str | None = None  # `--key`: queueing it again returns this job

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        # Positional when the row's columns are this class's fields in order (SELECT *
        # and RETURNING * on the current schema): the claim path builds many of these.
        if len(row) == _FIELD_COUNT and tuple(row.keys()) == _FIELD_NAMES:
            # Every field is present, so skip the frozen __init__ (one
            # object.__setattr__ per field) and fill the instance directly.
            job = object.__new__(cls)
            values = job.__dict__
            values.update(zip(_FIELD_NAMES, row, strict=True))
            values["status"] = _STATES[values["status"]]
            return job
        fields = {key: row[key] for key in row.keys()}
        fields["status"] = _STATES[fields["status"]]
        return cls(**fields)

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled."""
        return self.status in FINISHED

    @functools.cached_property
    def request(self) -> JobParams:
        """The job's `params`, parsed once (a downgraded job's: the SD1.5 values)."""
        downgrade = (Downgrade(self.model_requested, self.width, self.height)
                     if self.downgraded_from is not None else None)
        return JobParams.parse(self.params, downgrade)

    def shown_params(self) -> dict[str, Any]:
        """The params `zmm history show --json` prints: the request, and
        `enhance_skipped` (a column since schema 17) where it always was."""
        skipped = {"enhance_skipped": self.enhance_skipped} if self.enhance_skipped else {}
        return dict(self.request.as_dict(), **skipped)

    @property
    def output_list(self) -> list[str]:
        return json.loads(self.outputs) if self.outputs else []

    @property
    def plain_list(self) -> list[str]:
        """The images without text (composed jobs only), in the order of `outputs`."""
        return json.loads(self.plain_outputs) if self.plain_outputs else []

    def output_file(self, assets_root: Path) -> Path | None:
        """The first output's absolute path (output_path is relative to the assets root)."""
        return asset_file(assets_root, self.output_path)

    def thumbnail_file(self, assets_root: Path) -> Path | None:
        return asset_file(assets_root, self.thumbnail_path)

    def output_files(self, assets_root: Path) -> list[Path]:
        return [assets_root / name for name in self.output_list]

    def public(self, assets_root: Path | None = None) -> dict[str, Any]:
        """The stable JSON shape of a job for `--json` output. With `assets_root`,
        every path relative to it also comes absolute: output_file beside
        output_path, thumbnail_file beside thumbnail_path, output_files beside
        outputs, plain_file beside plain_path and plain_files beside plain_outputs."""
        data: dict[str, Any] = {}
        for name, value in dataclasses.asdict(self).items():
            if name != "enhanced_prompt":
                data[name] = value
            if name == "prompt":  # `history show` lists the two side by side
                data["enhanced_prompt"] = self.enhanced_prompt
        for internal in ("seq", "params", "queued_ts", "priority_rank", "outputs", "passed_over",
                         "enqueued_note", "plain_outputs", "vram_wait_ts"):
            data.pop(internal)
        data["outputs"] = self.output_list
        plains = self.plain_list
        data["plain_path"] = plains[0] if plains else None
        data["plain_outputs"] = plains
        data["needs"] = json.loads(self.needs) if self.needs else None
        # memory in bytes, as everywhere in JSON (the column keeps GB, to 0.01)
        gb = data.pop("vram_used_gb")
        data["vram_used_bytes"] = None if gb is None else round(gb * 1024**3)
        data["pinned"] = bool(self.pinned)
        data["cloud_allowed"] = bool(self.cloud_allowed)
        data["oom_retried"] = bool(self.oom_retried)
        if assets_root is not None:
            output, thumbnail = self.output_file(assets_root), self.thumbnail_file(assets_root)
            data["output_file"] = str(output) if output else None
            data["thumbnail_file"] = str(thumbnail) if thumbnail else None
            data["output_files"] = [str(path) for path in self.output_files(assets_root)]
            data["plain_file"] = str(assets_root / plains[0]) if plains else None
            data["plain_files"] = [str(assets_root / name) for name in plains]
        return data


def asset_file(assets_root: Path, relative: str | None) -> Path | None:
    """The absolute path of a file stored relative to the assets root (a path
    stored absolute stays as it is)."""
    return assets_root / relative if relative else None


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(Job))
_FIELD_COUNT = len(_FIELD_NAMES)
_STATES = {state.value: state for state in JobState}  # faster than JobState(text) per row
