"""One median for every view: the nearest rank, so `zmm top` and `zmm stats`
report the same number for the same jobs (an even count included)."""

from zmm import measures
from zmm.timestamps import iso
from zmm.views import dashboard


def test_the_median_of_an_even_count_is_a_time_some_job_took():
    assert measures.median([10.0, 40.0, 20.0, 30.0]) == 20.0  # not 25.0
    assert measures.median([]) is None
    assert measures.percentile(range(1, 21), 95) == 19
    assert measures.rank(3, 50) == 2 and measures.rank(1, 95) == 1


def test_top_uses_the_same_median_as_stats():
    now = 1_800_000_000.0
    finished = [("succeeded", iso(now - 60 * n), float(seconds))
                for n, seconds in enumerate((10, 40, 20, 30), start=1)]
    assert dashboard.throughput(finished, now).median_generation_s == 20.0


def test_the_median_leaves_its_argument_unsorted():
    values = [3.0, 1.0, 2.0]
    assert measures.median(values) == 2.0 and values == [3.0, 1.0, 2.0]
