"""`zmm stats` through CliRunner: the JSON shape, the human view, the window flag."""

from __future__ import annotations

import json
import time

import pytest

from zmm import intake
from zmm.jobs import JobState
from zmm.store import Store

TOP_KEYS = {"since", "until", "jobs", "by_backend", "success_rate", "local_success_rate",
            "generation_time_s", "cost_usd", "events", "images_per_week", "targets",
            "schema", "ok", "error"}
STATUS_KEYS = {"queued", "running", "succeeded", "failed", "cancelled"}
BAD_SINCE = ("error: since: a number and a unit: s, min, h, d, w, mo (30 days) or y (365 days), "
             "such as 30min, 12h, 7d, 3mo; at most 100 years, or all")


def add_jobs(settings, *, age_s: float = 0.0) -> None:
    """Three local successes, one cloud success with a cost, one failure, created `age_s` ago."""
    with Store(settings.spool_path, clock=lambda: time.time() - age_s) as store:
        outcomes = [("local", 30.0, None)] * 3 + [("stability", 8.0, 0.04), ("local", None, None)]
        for backend, seconds, cost in outcomes:
            job = store.enqueue(intake.build({"prompt": "a lighthouse"}, settings))[0]
            fields = {"backend": backend, "model_used": "sd_xl_base_1.0.safetensors"}
            if seconds is not None:
                fields["generation_time_s"] = seconds
            if cost is not None:
                fields["cost_usd"] = cost
            store.transition(job.id, JobState.RUNNING, expect=JobState.QUEUED, **fields)
            store.transition(job.id, JobState.SUCCEEDED if seconds else JobState.FAILED,
                             expect=JobState.RUNNING)
        store.add_event(job.id, "swap", "need VRAM", {"unload": ["llama3:8b"]})


def test_json_has_every_documented_key(cli, settings):
    add_jobs(settings)
    data = cli.json("stats", "--json")
    assert set(data) == TOP_KEYS
    assert set(data["jobs"]) == {"total", "by_status"}
    assert set(data["jobs"]["by_status"]) == STATUS_KEYS
    assert set(data["by_backend"]) == {"local", "stability"}
    assert set(data["by_backend"]["stability"]) == STATUS_KEYS | {"cost_usd"}
    assert set(data["generation_time_s"]["sd_xl_base_1.0.safetensors"]) == {
        "count", "median_s", "p95_s", "max_s"}
    assert set(data["cost_usd"]) == {"total", "cloud_jobs"}
    assert set(data["events"]) == {"swaps", "downgrades", "cloud_fallbacks", "vram_waits"}
    assert set(data["targets"]) == {"median_generation_s", "local_success_rate", "images_per_week"}
    for target in data["targets"].values():
        assert set(target) == {"target", "value", "met"}
    assert data["jobs"]["total"] == 5 and data["success_rate"] == 0.8
    assert data["local_success_rate"] == 0.6
    assert data["cost_usd"] == {"total": 0.04, "cloud_jobs": 1}
    assert data["events"]["swaps"] == 1


def test_human_view_ends_with_the_targets(cli, settings):
    add_jobs(settings)
    result = cli("stats")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.strip().splitlines()
    assert lines[-3].split("\t") == ["median generation time", "< 60 s", "30 s", "met"]
    assert lines[-2].split("\t") == ["local success", "> 95%", "60.00%", "not met"]
    assert lines[-1].startswith("images per week\t>= 20\t")
    assert "stability\t0\t0\t1\t0\t0\t0.0400" in lines  # the per-backend table


def test_empty_spool_prints_zeros_not_an_error(cli):
    result = cli("stats")
    assert result.exit_code == 0, result.stderr
    assert "no finished jobs" in result.stdout
    assert "jobs     0 (queued 0, running 0, succeeded 0, failed 0, cancelled 0)" in result.stdout
    assert result.stdout.strip().splitlines()[-3:] == [
        "median generation time\t< 60 s\tno data\tunknown",
        "local success\t> 95%\tno data\tunknown",
        "images per week\t>= 20\t0\tnot met"]


@pytest.mark.parametrize("since", ["30", "7x", "-2d", "", "forever", "7 days", "99999999999d"])
def test_bad_since_is_one_line_exit_2_and_writes_nothing(cli, settings, since):
    result = cli("stats", "--since", since, "--json")
    assert result.exit_code == 2
    assert result.stderr == BAD_SINCE + "\n"
    assert json.loads(result.stdout) == {"schema": 2, "ok": False, "error": {
        "code": "usage", "exit_code": 2, "message": BAD_SINCE.removeprefix("error: "),
        "hint": None}}
    assert not settings.spool_path.exists()


def test_since_all_reaches_past_the_default_30_days(cli, settings):
    add_jobs(settings, age_s=60 * 86400)
    add_jobs(settings)
    recent = cli.json("stats", "--json")
    assert recent["jobs"]["total"] == 5 and recent["since"] is not None
    everything = cli.json("stats", "--since", "all", "--json")
    assert everything["jobs"]["total"] == 10 and everything["since"] is None
    # eight successes over the 60 days since the oldest job
    assert everything["images_per_week"] == round(8 / (60 / 7), 4)
    assert cli.json("stats", "--since", "12h", "--json")["jobs"]["total"] == 5
    assert cli.json("stats", "--since", "ALL", "--json")["jobs"]["total"] == 10
