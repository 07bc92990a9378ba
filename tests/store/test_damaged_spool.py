"""A spool file with a damaged page: every command that reads it says so in one
line and exits 7 (the spool is unusable), whichever store method meets the
damage first; none prints a traceback."""

from __future__ import annotations

import os

import pytest

from zmm.errors import SpoolUnusable
from zmm.store import Store

PAGE = 4096


@pytest.fixture
def damaged(cli, settings):
    for number in range(30):
        result = cli("generate", f"a fox {number} " + "x" * 400, "--no-wait")
        assert result.exit_code == 0, result.stderr
    size = settings.spool_path.stat().st_size
    assert size > 6 * PAGE  # the jobs fill pages beyond the first ones
    with open(settings.spool_path, "r+b") as spool:
        spool.seek(3 * PAGE)
        spool.write(os.urandom(PAGE))
    return settings


@pytest.mark.parametrize("argv", [("queue",), ("queue", "--json"), ("stats",),
                                  ("top", "--once"), ("cleanup", "--dry-run")])
def test_reading_commands_exit_7_with_one_line(cli, damaged, argv):
    result = cli(*argv)
    assert result.exit_code == 7, result.stderr
    assert result.stderr.startswith(f"error: the spool at {damaged.spool_path} is not a usable "
                                    "SQLite database")
    assert "Traceback" not in result.stderr and "hint: run `zmm doctor`" in result.stderr


def test_every_store_method_maps_sqlite_errors(damaged):
    # recent_generation_times had no error block of its own: the store maps them all
    with Store(damaged.spool_path) as store, pytest.raises(SpoolUnusable):
        store.recent_generation_times()
