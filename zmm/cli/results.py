"""Following jobs to the end for `zmm generate` and `zmm wait`, then handing out
their results: ids or paths one per line, or JSON, on stdout; with `--out DIR`
the images under the names the script chose (zmm.assets.named). Loaded only
when a command waits or prints jobs, so `generate --no-wait` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zmm.cli.common import emit, emit_json, partial, say
from zmm.errors import Interrupted, JobFailed, ZmmError, kind_exit_code
from zmm.store import shared_batch


@dataclass(frozen=True)
class Output:
    """How results are shown: JSON or lines, progress or only failures, and the
    directory their images go to (None: left where zmm keeps them)."""

    as_json: bool = False
    quiet: bool = False
    out_dir: Path | None = None


def follow(store: Any, ids: list[str], settings: Any, timeout: float | None, output: Output,
           inline: bool = False) -> None:
    """Wait for the jobs; `inline`: run the queue in this process whenever no
    worker holds the lock; otherwise (`zmm wait`) say once if no worker is alive."""
    from zmm.cli import render
    from zmm.views import follow as following
    from zmm.worker import service

    view = render.FollowView(total=len(ids), quiet=output.quiet)
    runner = service.InlineRunner(
        settings, ids, notice=view.notice,
        backend=service.inline_backend(settings, store.get(ids[0]), store.backends())
    ) if inline else None
    lease_s = settings.get("worker.lease_s")
    run_or_notice = runner.poll if runner is not None else following.NoWorkerNotice(
        store, lease_s=lease_s, say=view.notice)
    reasons = following.WaitingReasons(store, ids, lease_s=lease_s, say=view.notice)
    paused = following.PausedNotice(store, say=view.notice)

    def between() -> None:
        paused()
        run_or_notice()
        reasons()

    try:
        with view:
            paused()
            jobs = following.wait_for(store, ids, aging_s=settings.get("worker.aging_s"),
                                      on_change=view.update, timeout=timeout, between=between)
            if runner is not None:
                runner.finish()
            for job in jobs:  # what the jobs' workers noted (text cut to fit, ...)
                for event in store.events(job.id):
                    if event["kind"] == "notice":
                        view.notice(f"{job.id}: {event['message']}")
    except KeyboardInterrupt:
        if runner is not None:
            runner.stop()
        _jobs_so_far(store, ids, settings.assets_dir)
        say(following.after_interrupt(store, ids, lease_s=lease_s))
        raise Interrupted("interrupted while waiting; the jobs stay in the spool") from None
    except BaseException as exc:
        if runner is not None:
            runner.stop()
        if isinstance(exc, ZmmError):  # a timeout, ComfyUI down: the jobs as they are now
            _jobs_so_far(store, ids, settings.assets_dir)
        raise
    show(jobs, output, settings.assets_dir, finished=True)
    failed = [job for job in jobs if job.status != "succeeded"]
    if failed:
        first = failed[0]
        error = JobFailed(f"{len(failed)} of {len(jobs)} job(s) did not succeed; "
                          f"{first.id}: {first.status}"
                          + (f" ({first.error_kind})" if first.error_kind else "")
                          + (f": {first.error_message}" if first.error_message else ""))
        error.exit_code = kind_exit_code([job.error_kind for job in failed])
        raise error


def _jobs_so_far(store: Any, ids: list[str], assets_root: Path) -> None:
    """The followed jobs as the spool has them now, for the JSON document of a
    command that ends before they do."""
    try:
        jobs = store.get_many(ids)
        partial(batch_id=shared_batch(jobs), jobs=[job.public(assets_root) for job in jobs])
    except ZmmError:
        pass  # the spool itself failed: the jobs registered at enqueue stay




def show(jobs: list[Any], output: Output, assets_root: Path, finished: bool = False) -> None:
    """The jobs on stdout: JSON (`jobs`, and `batch_id` when they share one), or a
    line each: the first image's path once succeeded, else the job id. With
    --out, the images are placed first and the paths are theirs."""
    placed = {job.id: _place(job, output.out_dir, assets_root) for job in jobs} \
        if output.out_dir is not None and finished else {}
    if output.as_json:
        shown = []
        for job in jobs:
            data = job.public(assets_root)
            if output.out_dir is not None:
                data["out_files"] = [str(path) for path in placed.get(job.id, [])]
            shown.append(data)
        emit_json({"batch_id": shared_batch(jobs), "jobs": shown})
        return
    for job in jobs:
        if job.id in placed and placed[job.id]:
            emit(str(placed[job.id][0]))
            continue
        path = job.output_file(assets_root) if finished and job.status == "succeeded" else None
        emit(str(path) if path is not None else job.id)


def _place(job: Any, out_dir: Path | None, assets_root: Path) -> list[Path]:
    from zmm.assets import named

    if out_dir is None or job.status != "succeeded":
        return []
    return named.place(out_dir, job.name or job.id, job.output_files(assets_root))
