"""The one definition of a median and a percentile, for every view that shows
one (`zmm stats`, `zmm top`, the ETAs of `zmm queue`): the nearest rank, so a
median is always a time some job took, and two views of the same jobs agree.
"""

from __future__ import annotations

from collections.abc import Iterable


def rank(n: int, percent: int) -> int:
    """Nearest rank, 1-based: ceil(percent / 100 * n), in integers (exact, no
    float rounding); the lower middle for a median of an even count."""
    return max(1, (percent * n + 99) // 100)


def percentile(values: Iterable[float], percent: int) -> float | None:
    """The nearest-rank percentile of `values`; None when there are none."""
    ordered = sorted(values)
    return ordered[rank(len(ordered), percent) - 1] if ordered else None


def median(values: Iterable[float]) -> float | None:
    return percentile(values, 50)
