"""Durations a user types (`--since`, `--older-than`, `--compress-older-than`,
`zmm stats --since`): one parser, one set of units, one wording of the error.

Units: s (seconds), min (minutes), h, d, w, mo (30 days), y (365 days). A bare
`m` is refused: it reads as minutes to some and months to others.
"""

from __future__ import annotations

import re

from zmm.errors import InvalidInput

UNITS: dict[str, float] = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
                           "mo": 30 * 86400, "y": 365 * 86400}
MAX_S = 100 * 365 * 86400.0  # further back than a date can say
ALLOWED = "a number and a unit: s, min, h, d, w, mo (30 days) or y (365 days), such as " \
          "30min, 12h, 7d, 3mo; at most 100 years"
_PATTERN = re.compile(r"^\s*(\d{1,20}(?:\.\d{1,20})?)\s*([a-z]+)\s*$")


def parse(field: str, text: str, *, words: dict[str, None] | None = None) -> float | None:
    """`30min`, `12h`, `7d`, `2w`, `3mo`, `1y` -> seconds. `words`: extra words
    the option accepts (`never`, `all`), each meaning None (no limit)."""
    extra = words or {}
    lowered = text.strip().lower()
    if lowered in extra:
        return None
    allowed = ALLOWED + "".join(f", or {word}" for word in extra)
    match = _PATTERN.match(lowered)
    if match and match.group(2) == "m":
        raise InvalidInput(field, f"{match.group(1)}m is ambiguous: write {match.group(1)}min "
                           f"for minutes or {match.group(1)}mo for months")
    if not match or match.group(2) not in UNITS:
        raise InvalidInput(field, allowed)
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds > MAX_S:
        raise InvalidInput(field, allowed)
    return seconds
