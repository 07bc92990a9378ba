"""`zmm serve-worker`: drain the spool through one ComfyUI server."""

from __future__ import annotations

from typing import Optional

import typer

from zmm.cli.common import load_config, say

app = typer.Typer(add_completion=False)


@app.command("serve-worker")
def serve_worker(
    comfyui: Optional[str] = typer.Option(None, "--comfyui",
                                          help="ComfyUI URL (default: $ZMM_COMFYUI_URL, config "
                                          "comfyui.url, http://127.0.0.1:8188)."),
    once: bool = typer.Option(False, "--once", help="Run what is queued and due (and finish the "
                              "jobs of a worker that died), then exit: 1 if one did not succeed."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", min=1, help="Stop after N jobs."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Plain log lines, no live display."),
    launch: Optional[str] = typer.Option(None, "--launch", metavar="CMD",
                                         help="Managed mode: start ComfyUI with CMD unless one "
                                         "already answers, and stop it on exit (config "
                                         "comfyui.command)."),
) -> None:
    """Run jobs from the spool on ComfyUI (one worker per ComfyUI server).

    Ctrl-C finishes the running job and exits; a second Ctrl-C (or SIGTERM)
    interrupts it and queues it again."""
    from zmm.cli import render
    from zmm.worker import service

    settings = load_config(comfyui__url=comfyui.rstrip("/") if comfyui else None,
                           comfyui__command=launch)
    view = render.WorkerView(live=False if no_progress else None)
    counts = service.serve(settings, once=once, max_jobs=max_jobs, observer=view)
    say(f"worker stopped: {counts.succeeded} succeeded, {counts.other} other")
    if once and counts.other:
        from zmm.errors import JobFailed

        named = " ".join(counts.not_succeeded) + (" ..." if counts.other > len(counts.not_succeeded)
                                                  else "")
        raise JobFailed(f"{counts.other} job(s) failed or were cancelled: {named}",
                        hint="`zmm history show <id>` says why")
