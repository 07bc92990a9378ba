"""What following jobs tells a person: each state once in a log, only failures
with --quiet, a paused queue, and after Ctrl-C what will run the jobs left."""

from __future__ import annotations

from types import SimpleNamespace

from zmm import intake
from zmm.cli import render
from zmm.views import follow


def snap(job_id, status, position=None, phase=None, progress=None, error=None):
    job = SimpleNamespace(id=job_id, status=status, phase=phase, phase_detail=None,
                          progress_value=progress, progress_max=20 if progress else None,
                          output_path="images/x.png" if status == "succeeded" else None,
                          error_message=error)
    return SimpleNamespace(job=job, position=position, queued_total=3,
                           finished=status in ("succeeded", "failed", "cancelled"))


def feed(view, capsys) -> list[str]:
    for item in [snap("a", "queued", 2), snap("b", "queued", 3),
                 snap("a", "queued", 1), snap("b", "queued", 2),  # only a's move is told
                 snap("a", "running", None, "sampling", 1),
                 snap("b", "queued", 1),  # b is the first queued now: its move is told
                 snap("a", "running", None, "sampling", 2),
                 snap("a", "running", None, "saving"), snap("a", "succeeded"),
                 snap("b", "failed", error="boom")]:
        view.update(item)
    return [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()]


def test_a_log_gets_each_state_once_and_the_head_s_moves(capsys):
    assert feed(render.FollowView(total=2), capsys) == [
        "a queued (position 2 of 3)", "b queued (position 3 of 3)",
        "a queued (position 1 of 3)", "a sampling", "b queued (position 1 of 3)", "a saving",
        "a succeeded: images/x.png", "b failed: boom"]


def test_quiet_keeps_only_the_jobs_that_did_not_succeed(capsys):
    assert feed(render.FollowView(total=2, quiet=True), capsys) == ["b failed: boom"]


def test_a_paused_queue_is_said_and_so_is_its_resumption(spool):
    said: list[str] = []
    notice = follow.PausedNotice(spool, say=said.append, every=0)
    notice()
    spool.set_state("paused", True)
    notice()
    notice()
    spool.set_state("paused", False)
    notice()
    assert said == [follow.PAUSED, "the queue was resumed"]
    assert "zmm queue resume" in follow.PAUSED


def test_after_ctrl_c_the_advice_names_what_runs_the_jobs_left(settings, spool):
    jobs = spool.enqueue(intake.build({"prompt": "p", "count": 2}, settings))
    spool.cancel([jobs[0].id])
    spool.set_state("paused", True)
    advice = follow.after_interrupt(spool, [job.id for job in jobs], lease_s=30)
    assert f"1 job(s) not finished stay queued or running ({jobs[1].id})" in advice
    assert "no worker is running" in advice and "`zmm serve-worker`" in advice
    assert "`zmm queue resume`" in advice and f"zmm wait --batch {jobs[0].batch_id}" in advice
    assert jobs[0].id not in advice.split("(")[1].split(")")[0]
