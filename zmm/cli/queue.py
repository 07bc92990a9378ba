"""`zmm queue`: the run order, and cancel / retry / priority / pause / resume."""

from __future__ import annotations

from typing import Optional

import typer

from zmm.cli.common import emit, emit_json, load_config, open_store, say, word
from zmm.errors import Conflict, InvalidInput

app = typer.Typer(help="Show and steer the queue.", invoke_without_command=True)


@app.callback()
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the queue as JSON."),
    show_all: bool = typer.Option(False, "--all", help="Also list the last 20 finished jobs."),
) -> None:
    """Running and queued jobs in run order, with position, age, progress and ETA."""
    if ctx.invoked_subcommand is not None:
        return
    from zmm.views import queue as view

    settings = load_config()
    with open_store(settings, read_only=True) as store:
        shown = view.read(store, settings, with_finished=show_all)
    if as_json:
        emit_json(shown.public(store.assets_root))
        return
    from zmm.cli import render

    if shown.paused:
        say("queue is paused: workers claim nothing until `zmm queue resume`")
    if not shown.workers:
        say("no worker is running: start one with `zmm serve-worker`")

    def age(job) -> str:
        return f"{shown.age_s(job):.0f}s"

    table_rows = [["run", job.id, job.priority, age(job), render.describe_job(job), ""]
                  for job in shown.running]
    table_rows += [[str(item.position), item.job.id, item.job.priority, age(item.job),
                    render.describe_job(item.job, waiting=item.waiting_reason),
                    _eta(item.eta_s, item.waiting_reason)] for item in shown.queued]
    table_rows += [["done", job.id, job.priority, age(job), render.describe_job(job), ""]
                   for job in shown.finished]
    if not table_rows:
        say("the queue is empty")
        return
    render.table(None, ["pos", "id", "priority", "age", "state", "eta"], table_rows)


@app.command("cancel")
def cancel(
    job_ids: list[str] = typer.Argument(None, help="Job ids (or unique prefixes)."),
    all_pending: bool = typer.Option(False, "--all-pending", help="Cancel every queued job."),
    batch: Optional[str] = typer.Option(None, "--batch",
                                        help="Cancel the unfinished jobs of this batch."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cancel queued jobs now; running jobs are cancelled by their worker.
    A named job that has already finished is a conflict (exit 5); a finished job
    of a --batch is reported as it is."""
    if sum((bool(job_ids), all_pending, batch is not None)) > 1:
        raise InvalidInput("batch", "give job ids, --batch ID or --all-pending, one of them")
    settings = load_config()
    with open_store(settings) as store:
        if all_pending:
            results = store.cancel_all_pending()
        elif batch is not None:
            results = store.cancel(store.batch_job_ids(batch))
        else:
            ids = [store.get(job_id).id
                   for job_id in _need_ids(job_ids, "--batch ID or --all-pending")]
            results = store.cancel(ids)
        _deliver_webhooks(store, settings, [r.id for r in results if r.result == "cancelled"])
    if as_json:
        emit_json({"results": [{"id": r.id, "result": word(r.result), "status": r.status}
                               for r in results]})
    else:
        for item in results:
            if all_pending or batch is not None or not item.refused:
                emit(f"{item.id}\t{item.result}")
    # --all-pending and --batch ask for whatever is still unfinished: a job that
    # finished (meanwhile) is reported, not an error. A job named on the command line is.
    refused = [] if all_pending or batch is not None else [r for r in results if r.refused]
    if refused:
        raise Conflict("; ".join(f"{r.id}: {r.result}" for r in refused),
                       hint="only queued or running jobs can be cancelled")


def _deliver_webhooks(store, settings, cancelled: list[str]) -> None:
    """Queued jobs are cancelled here, with no worker involved: give their
    webhooks one try now; what fails waits in the outbox for the next worker."""
    if cancelled:
        from zmm.worker.webhooks import deliver_due

        deliver_due(store, cancelled, settings=settings,
                    budget_s=settings.get("webhooks.timeout_s"))


@app.command("retry")
def retry(
    job_ids: list[str] = typer.Argument(None, help="Failed or cancelled job ids."),
    failed: bool = typer.Option(False, "--failed", help="Retry every failed job."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue failed or cancelled jobs again (attempts start over)."""
    settings = load_config()
    with open_store(settings) as store:
        ids = store.failed_ids() if failed else [
            store.get(job_id).id for job_id in _need_ids(job_ids, "--failed")]
        jobs = store.retry(ids)
    if as_json:
        emit_json({"jobs": [job.public(store.assets_root) for job in jobs]})
    else:
        for job in jobs:
            emit(f"{job.id}\tqueued")


@app.command("priority")
def priority(
    job_id: str = typer.Argument(..., help="A queued job."),
    level: str = typer.Argument(..., help="CRITICAL | HIGH | MEDIUM | LOW"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Change a queued job's priority."""
    from zmm.jobs import parse_priority

    settings = load_config()
    wanted = parse_priority(level)
    with open_store(settings) as store:
        job = store.set_priority(store.get(job_id).id, wanted)
    if as_json:
        emit_json({"job": job.public(store.assets_root)})
    else:
        emit(f"{job.id}\t{job.priority}")


@app.command("pause")
def pause(as_json: bool = typer.Option(False, "--json")) -> None:
    """Stop workers from claiming jobs (running jobs finish)."""
    _set_paused(True, as_json)


@app.command("resume")
def resume(as_json: bool = typer.Option(False, "--json")) -> None:
    """Let workers claim jobs again."""
    _set_paused(False, as_json)


def _set_paused(paused: bool, as_json: bool) -> None:
    settings = load_config()
    with open_store(settings) as store:
        store.set_state("paused", paused)
    if as_json:
        emit_json({"paused": paused})
    else:
        emit("paused" if paused else "resumed")


def _need_ids(job_ids: Optional[list[str]], alternative: str) -> list[str]:
    if not job_ids:
        raise InvalidInput("id", f"give one or more job ids, or {alternative}")
    return job_ids


def _eta(eta: float | None, why: str | None) -> str:
    if why is not None:
        return "-"  # it waits for a backend that can run it
    return f"{eta:.0f}s" if eta is not None else "?"
