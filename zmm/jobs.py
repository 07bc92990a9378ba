"""The job domain: states and their transition table, priorities, and the
validation and resolution of a generation request into concrete parameters.

Pure: no I/O, no clock, no SQL. Validation is plain code rather than pydantic
because it runs on every `zmm generate --no-wait`, where start-up time counts.
"""

from __future__ import annotations

import os
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zmm.errors import Conflict, InvalidInput


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Succeeded, failed or cancelled: the worker is done with the job."""
        return self in FINISHED


# The finished states, defined once; a tuple, in the order help texts list them.
# The spool's SQL spells the same set as "not queued or running"
# (zmm.store.queries.DONE, migration 0008).
FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

# The only moves a job may make. running -> queued is a retryable error or an
# expired lease; failed/cancelled -> queued is an explicit `zmm queue retry`.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.CANCELLED: frozenset({JobState.QUEUED}),
}


def check_transition(job_id: str, current: JobState | str, target: JobState | str) -> None:
    current, target = JobState(current), JobState(target)
    if target not in TRANSITIONS[current]:
        raise Conflict(f"job {job_id} is {current.value}; it cannot become {target.value}")


# A job id: "mmg-", the UTC second it was queued, and 32 random bits in hex. The
# one place its format is spelled; ComfyUI's prompt id is the job id (a retry
# adds -rN), and the assets folder names files after it.
JOB_ID_PATTERN = r"mmg-\d{8}-\d{6}-[0-9a-f]{8}"
JOB_ID_EXAMPLE = "mmg-20261123-101500-1a2b3c4d"
JOB_ID_LENGTH = len(JOB_ID_EXAMPLE)
_PROMPT_ID = re.compile(f"({JOB_ID_PATTERN})(?:-r\\d+)?")


def new_job_id(now: float, random: Callable[[int], bytes] = os.urandom) -> str:
    """A new job id for a job queued at `now` (Unix time)."""
    return f"mmg-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{random(4).hex()}"


def placeholder_job_id(index: int = 0) -> str:
    """A stand-in of the same shape for a job not queued yet (`--print-workflow`):
    mmg-00000000-000000-00000000, -00000001, ..."""
    return f"mmg-00000000-000000-{index:08x}"


def job_id_of_prompt(prompt_id: str) -> str | None:
    """The job id a ComfyUI prompt id stands for (the id, or the id with a retry
    suffix -rN); None if it is not zmm's."""
    match = _PROMPT_ID.fullmatch(prompt_id)
    return match.group(1) if match else None


class Priority(StrEnum):
    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        return PRIORITY_RANK[self]


PRIORITY_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.MEDIUM: 2, Priority.LOW: 3}
QUALITIES = ("draft", "standard", "high")
STYLES = ("technical-diagram", "report-cover", "infographic", "dashboard-thumbnail", "none")
# auto: ComfyUI, with a cloud fallback where allowed; local: never the cloud; cloud: only it.
BACKENDS = ("auto", "local", "cloud")
# off: the prompt as written; on: the local LLM improves it when it can (best effort);
# required: the job fails when it cannot (docs/enhance.md).
ENHANCE_MODES = ("off", "on", "required")
MAX_RUN_S = 7 * 24 * 3600.0  # a job's own --max-run-s: at most a week, as worker.max_run_s

# Sizes per aspect ratio, at each model family's native pixel count.
ASPECTS: dict[str, dict[str, tuple[int, int]]] = {
    "sdxl": {
        "1:1": (1024, 1024), "16:9": (1344, 768), "4:3": (1152, 896),
        "3:2": (1216, 832), "2:3": (832, 1216), "9:16": (768, 1344),
    },
    "sd15": {
        "1:1": (512, 512), "16:9": (768, 432), "4:3": (640, 480),
        "3:2": (768, 512), "2:3": (512, 768), "9:16": (432, 768),
    },
}
MAX_SEED = 2**63 - 1  # SQLite's INTEGER range; ComfyUI's UI seeds stay far below it
MAX_COUNT = 1000
_INTEGER = re.compile(r"^\s*[+-]?[0-9]{1,40}\s*$", re.ASCII)
_NUMBER = re.compile(r"^\s*[+-]?([0-9]{1,40}(\.[0-9]{0,40})?|\.[0-9]{1,40})([eE][+-]?[0-9]{1,4})?\s*$",
                     re.ASCII)
_SIZE = re.compile(r"^\s*(\d{1,9})\s*[xX×]\s*(\d{1,9})\s*$", re.ASCII)
_URL = re.compile(r"^https?://[^\s/:?#]+(:\d+)?([/?#]\S*)?$")


@dataclass
class JobSpec:
    """A validated, fully resolved job: everything the worker needs, nothing it must
    look up. A field named as a `jobs` column is stored in that column; `params()`
    holds the template's names for them (negative, checkpoint)."""

    prompt: str  # styled; the `prompt` column keeps user_prompt, what the user typed
    negative_prompt: str
    priority: Priority
    requester: str
    quality_tier: str
    style: str
    model_key: str  # a family alias (zmm.families.ALIASES) or "custom"
    model_requested: str | None  # the checkpoint (or diffusion model) file
    workflow: str  # template name, or the path of a custom workflow
    width: int
    height: int
    seed: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    webhook_url: str | None = None
    graph: dict[str, Any] | None = None  # a custom workflow, already --set and checked
    user_prompt: str = ""
    model_pinned: bool = False  # the user named the model: the VRAM gate never downgrades it
    backend_requested: str = "auto"  # one of BACKENDS
    cloud_allowed: bool = False  # may go to a cloud provider (decided at intake, never later)
    enhance: str = "off"  # one of ENHANCE_MODES: ask the local LLM for a better prompt
    enhanced_prompt: str | None = None  # one made already (a --from-image of an enhanced job)
    on_backend: str | None = None  # pinned to this backend (`--on NAME`); None: any
    name: str | None = None  # `--name` / a line's name: its images under --out (parse_name)
    key: str | None = None  # `--key` / a line's key: the idempotency key (parse_key)
    # The model files the bound graph loads, as sorted 'folder/name' strings: only a
    # backend whose server has all of them claims the job.
    needs: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # Files zmm keeps under the assets root before queueing (init images); not stored.
    inputs: list[Any] = field(default_factory=list)

    def params(self) -> dict[str, Any]:
        """The values the worker binds into the template's placeholders."""
        return {
            "prompt": self.prompt, "negative": self.negative_prompt, "seed": self.seed,
            "steps": self.steps, "cfg": self.cfg, "sampler": self.sampler,
            "scheduler": self.scheduler, "width": self.width, "height": self.height,
            "checkpoint": self.model_requested, "batch_size": 1, "model_key": self.model_key,
            "model_pinned": self.model_pinned,
        }

    def stored_params(self) -> dict[str, Any]:
        """The job's `params` column: what the worker binds and reads back."""
        stored = dict(self.params(), graph=self.graph, user_prompt=self.user_prompt, **self.extra)
        if self.enhance != "off":
            stored["enhance"] = self.enhance
        return stored


def parse_priority(value: str) -> Priority:
    try:
        return Priority(str(value).strip().upper())
    except ValueError:
        raise InvalidInput("priority", "one of CRITICAL, HIGH, MEDIUM, LOW") from None


def parse_choice(field_name: str, value: str, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise InvalidInput(field_name, "one of " + ", ".join(allowed))
    return text


def parse_size(value: str) -> tuple[int, int]:
    allowed = "WxH, each side a multiple of 8 from 64 to 4096 (e.g. 1024x768)"
    match = _SIZE.match(str(value))
    if not match:
        raise InvalidInput("size", allowed)
    width, height = int(match.group(1)), int(match.group(2))
    for side in (width, height):
        if side % 8 or not 64 <= side <= 4096:
            raise InvalidInput("size", allowed)
    return width, height


def parse_int(field_name: str, value: Any, low: int, high: int) -> int:
    allowed = f"an integer from {low} to {high}"
    if isinstance(value, bool):
        raise InvalidInput(field_name, allowed)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and _INTEGER.match(value):
        number = int(value)
    else:  # "٢", "1_000", "1e3", a list: none is a number as typed
        raise InvalidInput(field_name, allowed)
    if not low <= number <= high:
        raise InvalidInput(field_name, allowed)
    return number


def parse_float(field_name: str, value: Any, low: float, high: float) -> float:
    allowed = f"a number from {low:g} to {high:g}"
    if isinstance(value, bool):
        raise InvalidInput(field_name, allowed)
    if isinstance(value, str) and not _NUMBER.match(value):  # "٢", "1_0", "nan", "inf"
        raise InvalidInput(field_name, allowed)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InvalidInput(field_name, allowed) from None
    if not low <= number <= high or number != number:
        raise InvalidInput(field_name, allowed)
    return number


def parse_max_run_s(value: Any) -> float:
    """A job's own maximum run time: seconds, greater than 0 and at most a week."""
    allowed = f"seconds, greater than 0 and at most {MAX_RUN_S:.0f} (a week)"
    try:
        number = parse_float("max-run-s", value, 0.0, MAX_RUN_S)
    except InvalidInput:
        raise InvalidInput("max-run-s", allowed) from None
    if number <= 0:
        raise InvalidInput("max-run-s", allowed)
    return number


def parse_text(field_name: str, value: Any, *, max_len: int, required: bool = True,
               one_line: bool = False) -> str:
    """Text as given (stripped); `one_line`: no line break, control or bidi
    character (a name that is printed in tables and logs)."""
    if value is not None and not isinstance(value, str):
        raise InvalidInput(field_name, "text (a JSON string), not " + type(value).__name__)
    text = "" if value is None else value
    if one_line and any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text):
        raise InvalidInput(field_name, "one line of printable text (no line break, control "
                           "or bidi character)")
    if required and not text.strip():
        raise InvalidInput(field_name, "must not be empty")
    if len(text) > max_len:
        raise InvalidInput(field_name, f"at most {max_len} characters")
    if "\x00" in text:
        raise InvalidInput(field_name, "must not contain NUL characters")
    return text.strip()


MAX_NAME_LEN = 120
MAX_KEY_LEN = 256


def parse_name(value: Any) -> str | None:
    """A job's name for `--out`: one path component (no / or \\, not . or ..,
    not starting with a dot or a dash), one line, at most MAX_NAME_LEN characters."""
    if value in (None, ""):
        return None
    text = parse_text("name", value, max_len=MAX_NAME_LEN, one_line=True)
    if any(char in text for char in "/\\:") or text.startswith((".", "-")):
        raise InvalidInput("name", "one file name without a path: no / \\ or :, not starting "
                           f"with . or -, at most {MAX_NAME_LEN} characters")
    return text


def parse_key(value: Any) -> str | None:
    """An idempotency key: one line of text, at most MAX_KEY_LEN characters."""
    if value in (None, ""):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return parse_text("key", value, max_len=MAX_KEY_LEN, one_line=True)


def parse_enhance(value: Any, field_name: str = "enhance") -> str:
    """One of ENHANCE_MODES, from a flag, a `--from` field (booleans too) or config."""
    if value is True:
        return "on"
    if value is False:
        return "off"
    text = str(value).strip().lower()
    if text in ("on", "auto", "true", "yes", "1"):
        return "on"
    if text in ("off", "false", "no", "0"):
        return "off"
    if text == "required":
        return "required"
    raise InvalidInput(field_name, "one of " + ", ".join(ENHANCE_MODES)
                       + " (--enhance alone is on)")


def parse_webhook(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not _URL.match(value.strip()):
        raise InvalidInput("webhook", "an http:// or https:// URL")
    return value.strip()


def parse_checkpoint(value: str) -> str:
    name = parse_text("model", value, max_len=255)
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise InvalidInput("model", "a checkpoint name relative to ComfyUI's models/checkpoints "
                           "(or diffusion_models/ for split files)")
    return name


def styled_prompt(template: str, prompt: str) -> str:
    # str.replace, not str.format: braces in a user's prompt must stay literal.
    return template.replace("{prompt}", prompt) if "{prompt}" in template else f"{prompt}, {template}"
