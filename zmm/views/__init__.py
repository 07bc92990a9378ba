"""What the commands show, computed from the spool: the `zmm top` frame, the
`zmm backends` roster, the queue's waiting reasons, following jobs. Reads only;
nothing here prints."""

from __future__ import annotations


def median(values: list[float]) -> float:
    """The median of a non-empty list, as `statistics.median` computes it (the
    mean of the middle two for an even count), without importing `statistics`
    (and its fractions and decimal) on `zmm queue`'s path."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
