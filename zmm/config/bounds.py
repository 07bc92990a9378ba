"""The allowed range of every numeric setting, and the form of every server
URL, checked when the settings are loaded (and when a flag overrides one), so
a bad value in config.toml or the environment is one `error:` line before any
command starts, not a failure (or a traceback) later in the worker. NaN and
infinities are never allowed.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from zmm.errors import InvalidInput

DAY = 86_400.0
WEEK = 7 * DAY

# dotted key -> (lowest, highest, is the lowest itself allowed)
BOUNDS: dict[str, tuple[float, float, bool]] = {
    "comfyui.timeout_s": (0.0, DAY, False),
    "comfyui.silence_timeout_s": (0.0, WEEK, False),
    "comfyui.retry_max_s": (0.0, DAY, False),
    "comfyui.start_timeout_s": (0.0, DAY, False),
    "comfyui.stop_grace_s": (0.0, DAY, True),
    "comfyui.log_max_bytes": (1024, 1 << 40, True),
    "comfyui.crash_limit": (1, 1000, True),
    "comfyui.max_quick_exits": (1, 1000, True),
    "comfyui.hang_s": (0.0, WEEK, False),
    "comfyui.health_s": (0.0, DAY, False),
    "comfyui.alert_after_s": (0.0, WEEK, True),
    "ollama.unload_timeout_s": (0.0, DAY, False),
    "ollama.queue_end_delay_s": (0.0, DAY, True),
    "enhance.timeout_s": (0.0, DAY, False),
    "enhance.temperature": (0.0, 2.0, True),
    "enhance.max_chars": (1, 100_000, True),
    "worker.lease_s": (0.0, DAY, False),
    "worker.max_attempts": (1, 100, True),
    "worker.poll_s": (0.0, 3600.0, False),
    "worker.aging_s": (0.0, 365 * DAY, False),
    "worker.progress_interval_s": (0.0, 3600.0, False),
    "worker.backoff_s": (0.0, DAY, True),
    "worker.model_group_window": (0, 1000, True),
    "worker.files_refresh_s": (0.0, WEEK, False),
    "worker.max_run_s": (0.0, WEEK, True),
    "spool.busy_timeout_ms": (0, 3_600_000, True),
    "generate.cfg": (0.0, 30.0, True),
    "upscale.denoise": (0.0, 1.0, False),
    "retention.days": (0, 36_500, True),
    "webhooks.timeout_s": (0.0, 3600.0, False),
    "webhooks.tries": (1, 100, True),
    "webhooks.backoff_s": (0.0, DAY, True),
    "cloud.timeout_s": (0.0, DAY, False),
    "cloud.max_retries": (0, 100, True),
    "cloud.retry_after_max_s": (0.0, DAY, True),
    "cloud.concurrency": (1, 64, True),
    "stability.usd_per_credit": (0.0, 1000.0, True),
}
# sections whose every value is a number in this range
SECTION_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "vram_gb": (0.0, 1024.0, True),
    "max_wait_s": (0.0, 365 * DAY, True),
}
# tables of name -> number inside a section, each number in this range
TABLE_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "worker.max_run_s_by_style": (0.0, WEEK, True),
}

# URL settings -> may it be "" (not set)
URLS: dict[str, bool] = {"comfyui.url": False, "ollama.url": False, "enhance.url": True,
                         "stability.url": False, "openai.url": False,
                         "alerts.webhook_url": True}


def check_url(field: str, value: Any, *, empty_ok: bool = False) -> None:
    """An http:// or https:// URL with a host (and a valid port, if any)."""
    allowed = "an http:// or https:// URL such as http://127.0.0.1:8188"
    if not isinstance(value, str):
        raise InvalidInput(field, allowed)
    if empty_ok and not value.strip():
        return
    try:
        parts = urlsplit(value.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0-65535
    except ValueError as exc:
        raise InvalidInput(field, f"{allowed}; {value!r} is not ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname \
            or any(char.isspace() for char in value.strip()):
        raise InvalidInput(field, f"{allowed}, not {value!r}")


def allowed(bounds: tuple[float, float, bool]) -> str:
    low, high, inclusive = bounds
    if inclusive:
        return f"a number from {low:g} to {high:g}"
    return f"a number greater than {low:g} and at most {high:g}"


def check(dotted: str, value: Any, field: str | None = None) -> None:
    """InvalidInput(`field`, what is allowed) when `value` is outside the key's
    range or not a URL where one belongs; `field` defaults to "config KEY"."""
    field = field or f"config {dotted}"
    if dotted in URLS:
        check_url(field, value, empty_ok=URLS[dotted])
        return
    if dotted in TABLE_BOUNDS and isinstance(value, dict):
        for name, item in value.items():
            check(dotted, item, f"{field}.{name}")
        return
    section = dotted.partition(".")[0]
    bounds = BOUNDS.get(dotted) or TABLE_BOUNDS.get(dotted) or SECTION_BOUNDS.get(section)
    if bounds is None:
        return
    low, high, inclusive = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if section in SECTION_BOUNDS or dotted in TABLE_BOUNDS:
            raise InvalidInput(field, allowed(bounds) + f", got {value!r}")
        return  # a wrong type is _coerce's error
    ok = math.isfinite(value) and (low <= value if inclusive else low < value) and value <= high
    if not ok:
        raise InvalidInput(field, allowed(bounds) + f", got {value!r}")


def check_all(data: dict[str, dict[str, Any]]) -> None:
    for section, values in data.items():
        for key, value in values.items():
            check(f"{section}.{key}", value)
