"""`zmm serve-worker`: drain the spool through one ComfyUI backend, or every
configured backend (`--all`, one worker process each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import typer

from zmm.cli.common import load_config, say

app = typer.Typer(add_completion=False)


@app.command("serve-worker")
def serve_worker(
    comfyui: Optional[str] = typer.Option(None, "--comfyui",
                                          help="ComfyUI URL (default: $ZMM_COMFYUI_URL, config "
                                          "comfyui.url, http://127.0.0.1:8188); not with "
                                          "\\[\\[backends]] in config. A URL other than "
                                          "comfyui.url is its own backend, named after its "
                                          "host and port (127-0-0-1-8189)."),
    backend: Optional[str] = typer.Option(None, "--backend", metavar="NAME",
                                          help="Serve this configured backend (\\[\\[backends]] "
                                          "in config; docs/backends.md)."),
    every: bool = typer.Option(False, "--all", help="Serve every configured backend: one "
                               "worker process each, output lines prefixed with its name "
                               "(JSON log lines carry it as `backend`)."),
    once: bool = typer.Option(False, "--once", help="Run what is queued and due (and finish the "
                              "jobs of a worker that died), then exit: 1 if one did not succeed."),
    max_jobs: Optional[int] = typer.Option(None, "--max-jobs", min=1, help="Stop after N jobs."),
    no_progress: bool = typer.Option(False, "--no-progress", help="Plain log lines, no live display."),
    launch: Optional[str] = typer.Option(None, "--launch", metavar="CMD",
                                         help="Managed mode: start ComfyUI with CMD unless one "
                                         "already answers, and stop it on exit (config "
                                         "comfyui.command; a backend's own `command`)."),
    log_level: Optional[str] = typer.Option(None, "--log-level", metavar="LEVEL",
                                            help="Log lines instead of the display, from LEVEL "
                                            "up: debug, info (default), warning, error."),
    log_format: Optional[str] = typer.Option(None, "--log-format", metavar="FORMAT",
                                             help="Log lines instead of the display: text or "
                                             "json (one JSON object a line); docs/worker.md."),
) -> None:
    """Run jobs from the spool on ComfyUI (one worker per ComfyUI server).

    Ctrl-C finishes the running job and exits; a second Ctrl-C (or SIGTERM)
    interrupts it and queues it again. With several backends configured, pass
    --backend NAME or --all."""
    from zmm.config import fleet
    from zmm.worker import service

    settings = load_config(comfyui__url=comfyui.rstrip("/") if comfyui else None,
                           comfyui__command=launch)
    _check_flags(settings, backend, every, comfyui, launch)
    logging = _check_log_flags(log_level, log_format)
    if every:
        from zmm.worker.managed.serve_all import serve_all

        told: Callable[[str], None] = say
        if logging is not None:  # the parent's own lines in the children's form
            from zmm.worker import logs

            told = logs.LogObserver(logs.configure(level=logging[0], fmt=logging[1])).notice
        raise typer.Exit(serve_all(fleet.backends(settings), once=once, max_jobs=max_jobs,
                                   say=told, logging=logging))
    chosen = service.choose_backend(settings, backend)
    if comfyui and chosen.url != str(load_config().get("comfyui.url")).rstrip("/"):
        chosen = fleet.named_for_url(chosen)  # its own backend, not the `default` row
    _serve_one(fleet.settings_for(settings, chosen), once, max_jobs, no_progress, logging)


def _check_log_flags(level: str | None, fmt: str | None) -> tuple[str, str] | None:
    """(level, format) when the worker logs instead of showing its display."""
    from zmm.errors import InvalidInput
    from zmm.worker.logs import FORMATS, LEVELS

    if level is None and fmt is None:
        return None
    if level is not None and level.lower() not in LEVELS:
        raise InvalidInput("--log-level", f"one of {', '.join(LEVELS)}")
    if fmt is not None and fmt.lower() not in FORMATS:
        raise InvalidInput("--log-format", f"one of {', '.join(FORMATS)}")
    return (level or "info").lower(), (fmt or "text").lower()


def _check_flags(settings, backend: str | None, every: bool, comfyui: str | None,
                 launch: str | None) -> None:
    from zmm.config import fleet
    from zmm.errors import InvalidInput

    if every and backend is not None:
        raise InvalidInput("--all", "serves every backend; not with --backend NAME")
    if settings.backend_entries and (comfyui or launch):
        flag = "--comfyui" if comfyui else "--launch"
        raise InvalidInput(flag, "not with [[backends]] in config (each entry has its url and "
                           "command); pick one with --backend NAME")
    fleet.backends(settings)  # a bad [[backends]] entry: exit 2 before anything starts


def _serve_one(settings, once: bool, max_jobs: int | None, no_progress: bool,
               logging: tuple[str, str] | None) -> None:
    from zmm.cli import render
    from zmm.config import fleet
    from zmm.worker import logs, service

    stopped: Callable[[str], None]
    if logging is None:
        view: object = render.WorkerView(live=False if no_progress else None)
        stopped = say
    else:
        level, fmt = logging
        view = logs.LogObserver(logs.configure(level=level, fmt=fmt),
                                backend=fleet.serving(settings).name)
        stopped = view.stopped
    counts = service.serve(settings, once=once, max_jobs=max_jobs, observer=view)
    stopped(f"worker stopped: {counts.succeeded} succeeded, {counts.other} other")
    if once and counts.other:
        from zmm.errors import JobFailed

        named = " ".join(counts.not_succeeded) + (" ..." if counts.other > len(counts.not_succeeded)
                                                  else "")
        raise JobFailed(f"{counts.other} job(s) failed or were cancelled: {named}",
                        hint="`zmm history show <id>` says why")
