"""The typical generation time behind `zmm queue`'s ETAs and `zmm top`'s throughput
panel: the median, as `statistics.median` computes it."""

from __future__ import annotations

import statistics

import pytest

from zmm.views import median


@pytest.mark.parametrize("values", [[4.0], [3.0, 1.0], [5.5, 1.0, 2.5], [2.0, 9.0, 1.0, 4.0],
                                    [0.1, 0.2, 0.7, 0.4, 0.3, 0.9], [7.0, 7.0, 1.0, 7.0]],
                         ids=["one", "two", "odd", "even", "six", "ties"])
def test_median_is_the_statistics_median(values):
    assert median(values) == statistics.median(values)
    assert median([2.0, 9.0, 1.0, 4.0]) == 3.0  # the mean of the middle two


def test_median_leaves_its_argument_unsorted():
    values = [3.0, 1.0, 2.0]
    median(values)
    assert values == [3.0, 1.0, 2.0]
