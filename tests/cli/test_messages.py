"""Small things a person reads: help text keeps its brackets, ids are never
folded, `history show` prints JSON values, and a job's clock runs to its end."""

from __future__ import annotations

import json
from types import SimpleNamespace

from zmm import intake
from zmm.cli import render


def test_help_keeps_the_backends_brackets(cli):
    for command in (("generate",), ("serve-worker",)):
        shown = " ".join(cli(*command, "--help").stdout.split())
        assert "[[backends]]" in shown and "[]" not in shown


def test_history_ids_are_never_folded_on_a_120_column_terminal(monkeypatch, capsys):
    monkeypatch.setattr(render, "interactive", lambda stream=None: True)
    monkeypatch.setenv("COLUMNS", "120")
    ids = [f"mmg-20261207-10150{n}-1a2b3c4{n}" for n in range(3)]
    render.table(None, ["id", "status", "prompt", "output"],
                 [[job_id, "succeeded", "a very long prompt " * 5, "images/2026-12/" + job_id]
                  for job_id in ids])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 4  # the other columns did fold
    assert all(any(line.startswith(job_id + " ") for line in lines) for job_id in ids)


def test_history_show_prints_values_as_json(cli, settings, store):
    (job,) = store.enqueue(intake.build({"prompt": "a fox", "model": "sd15"}, settings))
    lines = cli("history", "show", job.id).stdout.splitlines()
    value = {line.split()[0]: line.split(None, 1)[1] if len(line.split()) > 1 else ""
             for line in lines if line and not line.startswith(" ")}
    assert value["pinned"] == "false" and value["outputs"] == "[]"
    assert json.loads(value["needs"]) == job.public()["needs"] and "'" not in value["needs"]


def test_the_clock_of_a_job_runs_past_its_last_sampler_step(monkeypatch):
    monkeypatch.setattr(render, "interactive", lambda stream=None: True)
    job = SimpleNamespace(id="mmg-x", status="running", phase="sampling", phase_detail=None,
                          progress_value=20, progress_max=20, output_path=None,
                          error_message=None)
    with render.FollowView(total=1) as view:
        view.update(SimpleNamespace(job=job, position=None, queued_total=0, finished=False))
        assert not view._progress.tasks[0].finished  # decoding and saving are still ahead
        done = SimpleNamespace(**{**job.__dict__, "status": "succeeded"})
        view.update(SimpleNamespace(job=done, position=None, queued_total=0, finished=True))
        assert view._progress.tasks[0].finished
