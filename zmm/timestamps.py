"""The spool's time stamps: UTC ISO-8601 text with microseconds, fixed width so
strings sort as times do. Every layer that writes or reads a `*_at` column
uses these two functions.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime


@functools.lru_cache(maxsize=16)  # a state change stamps several columns with one `now`
def iso(epoch: float) -> str:
    """UTC ISO-8601 with microseconds; fixed width, so strings sort as times."""
    # isoformat rather than strftime: faster, and every claim and finish calls this.
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")[:26] + "Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
