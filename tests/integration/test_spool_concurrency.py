"""Many real processes on one spool: every job recorded once, claimed at most
once, and no `database is locked` ever reaches a user."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import ROOT, zmm_process
from zmm.store import Store

CLAIMER = """
import sys, time
from pathlib import Path
from zmm.jobs import JobState
from zmm.store import Store
store = Store(Path(sys.argv[1]))
deadline = time.monotonic() + float(sys.argv[3])
idle_since = None
while time.monotonic() < deadline:
    job = store.claim(sys.argv[2], lease_s=600, aging_s=600)
    if job is None:
        idle_since = idle_since or time.monotonic()
        if Path(sys.argv[4]).exists() and time.monotonic() - idle_since > 0.5:
            break
        time.sleep(0.01)
        continue
    idle_since = None
    store.transition(job.id, JobState.SUCCEEDED, expect=JobState.RUNNING, worker_id=sys.argv[2])
    print(job.id, flush=True)
"""


@pytest.mark.slow
def test_32_enqueuers_and_2_claimers(home, settings, tmp_path):
    with Store(settings.spool_path):
        pass  # create the spool first, as a real install would have
    done_flag = tmp_path / "enqueue-finished"
    claimers = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, str(settings.spool_path), f"claimer-{n}",
                          "120", str(done_flag)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    enqueuers = [zmm_process("generate", f"prompt {n}", "--no-wait", "--count", "3")
                 for n in range(32)]
    enqueued: list[str] = []
    for process in enqueuers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
        enqueued += out.split()
    done_flag.touch()
    claimed: list[str] = []
    for process in claimers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        claimed += out.split()
    assert len(enqueued) == 96 == len(set(enqueued))
    counts = Counter(claimed)
    assert all(n == 1 for n in counts.values()), "a job was claimed twice"
    with Store(settings.spool_path) as store:
        rows = store.conn.execute("SELECT id, status FROM jobs").fetchall()
        claim_events = store.conn.execute(
            "SELECT job_seq, COUNT(*) FROM job_events WHERE kind = 'claimed' GROUP BY job_seq"
        ).fetchall()
        kept = store.conn.execute("SELECT n FROM job_counts WHERE key = 'all'").fetchone()[0]
    assert sorted(row["id"] for row in rows) == sorted(enqueued)
    assert set(claimed) == set(enqueued) and all(row["status"] == "succeeded" for row in rows)
    assert len(claim_events) == len(enqueued) and all(count == 1 for _, count in claim_events)
    assert kept == len(enqueued)  # the count the spool keeps, written by 32 processes
    print(f"enqueued {len(enqueued)}, claimed {len(claimed)}, duplicates 0")
