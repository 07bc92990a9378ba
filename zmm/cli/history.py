"""`zmm history`: finished and unfinished jobs, newest first, and one job in full."""

from __future__ import annotations

from typing import Optional

import typer

from zmm.cli.common import emit_json, load_config, open_store, say
from zmm.durations import parse
from zmm.errors import ERROR_KINDS, InvalidInput
from zmm.jobs import JobState

app = typer.Typer(help="Browse past and present jobs.", invoke_without_command=True)

STATUSES = tuple(JobState)
MAX_OFFSET = 2**62  # SQLite's integers stop at 2**63 - 1


@app.callback()
def listing(
    ctx: typer.Context,
    status: Optional[str] = typer.Option(None, "--status", help="Comma list: " + ", ".join(STATUSES)),
    request_type: Optional[str] = typer.Option(None, "--type", help="image"),
    requester: Optional[str] = typer.Option(None, "--requester"),
    model: Optional[str] = typer.Option(None, "--model", help="Checkpoint used or requested."),
    backend: Optional[str] = typer.Option(None, "--backend", help="local or a cloud provider."),
    error_kind: Optional[str] = typer.Option(None, "--error-kind",
                                             help="Why it failed: " + ", ".join(ERROR_KINDS)),
    since: Optional[str] = typer.Option(None, "--since",
                                        help="Only jobs created within, e.g. 30min, 12h, 7d, "
                                        "3mo (units: s min h d w mo y)."),
    search: Optional[str] = typer.Option(None, "--search", help="Words in the prompt."),
    batch: Optional[str] = typer.Option(None, "--batch",
                                        help="Only the jobs of this batch (the batch_id one "
                                        "--from or --count command gave its jobs)."),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    offset: int = typer.Option(0, "--offset", min=0, max=MAX_OFFSET),
    as_json: bool = typer.Option(False, "--json", help="Print the page as JSON."),
) -> None:
    """Jobs, newest first, with the total that match."""
    if ctx.invoked_subcommand is not None:
        return
    from zmm.cli import render
    from zmm.store import HistoryFilter
    from zmm.timestamps import iso

    statuses = tuple(s.strip().lower() for s in status.split(",") if s.strip()) if status else ()
    for value in statuses:
        if value not in STATUSES:
            raise InvalidInput("status", "a comma list of " + ", ".join(STATUSES))
    if error_kind is not None and error_kind not in ERROR_KINDS:
        raise InvalidInput("error-kind", "one of " + ", ".join(ERROR_KINDS))
    settings = load_config()
    with open_store(settings, read_only=True) as store:
        since_iso = iso(store.clock() - (parse("since", since) or 0)) if since else None
        flt = HistoryFilter(statuses=statuses, request_type=request_type,
                                    requester=requester, model=model, since_iso=since_iso,
                                    search=search, backend=backend, error_kind=error_kind,
                                    batch_id=batch or None,
                                    limit=limit, offset=offset)
        jobs, total = store.history_page(flt)
        cost = store.history_cost(flt)
    if as_json:
        emit_json({"total": total, "cost_usd": cost, "limit": limit, "offset": offset,
                   "jobs": [job.public(store.assets_root) for job in jobs]})
        return
    if not jobs:
        say(f"no jobs match ({total} in all)")
        return
    rows = [[job.id, job.status, job.priority, job.requester, job.backend or "",
             job.model_used or job.model_requested,
             f"{job.generation_time_s:.1f}s" if job.generation_time_s else "",
             f"${job.cost_usd:.4f}" if job.cost_usd else "",
             _short(job.prompt, 48), job.output_path or job.error_message or ""] for job in jobs]
    render.table(None, ["id", "status", "priority", "requester", "backend", "model", "time",
                        "cost", "prompt", "output"], rows)
    say(f"{len(jobs)} of {total} (offset {offset})" + (f"; cost ${cost:.4f} in all" if cost else ""))


@app.command("show")
def show(
    job_id: str = typer.Argument(..., help="A job id (or unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the job and its events as JSON."),
) -> None:
    """Every field of one job and its event timeline."""
    from zmm.cli import render

    settings = load_config()
    with open_store(settings, read_only=True) as store:
        job = store.get(job_id)
        events = store.events(job.id)
    if as_json:
        emit_json({"job": job.public(store.assets_root),
                   "params": job.shown_params(), "events": events})
        return
    render.fields([(key, value) for key, value in job.public(store.assets_root).items()]
                  + _part_fields(job.request.as_dict(), job.enhance_skipped))
    typer.echo("\nevents:")
    for event in events:
        move = f" {event['from'] or ''}->{event['to']}" if event["to"] else ""
        typer.echo(f"  {event['at']}  {event['kind']}{move}  {event['message'] or ''}")


def _part_fields(params: dict, skipped: str | None) -> list[tuple[str, object]]:
    """The LoRAs, init image, hires pass and enhancement a job asked for, one line each."""
    found: list[tuple[str, object]] = []
    if params.get("enhance"):
        found.append(("enhance", params["enhance"]
                      + (f" (not enhanced: {skipped})" if skipped else "")))
    if params.get("loras"):
        found.append(("loras", ", ".join(f"{item['name']}:{item['strength']:g}"
                                         for item in params["loras"])))
    image = params.get("init_image")
    if image:
        found.append(("init_image", f"{image['file']} ({image.get('name') or '?'}, "
                                    f"{image['width']}x{image['height']}"
                                    f"{', resized' if image.get('resize') else ''}) "
                                    f"denoise {params.get('denoise')}"))
    upscale = params.get("upscale")
    if upscale:
        how = f"model {upscale['model']}" if upscale.get("model") else upscale["method"]
        found.append(("upscale", f"x{upscale['factor']:g}, denoise {upscale['denoise']:g}, "
                                 f"{how}"))
    composition = params.get("compose")
    if isinstance(composition, dict):
        found.extend((f"text {key}", composition[key]) for key in ("title", "subtitle", "footer")
                     if composition.get(key))
        found.append(("brand", composition.get("brand")))
    return found


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command("pin")
def pin(
    job_id: str = typer.Argument(..., help="A job id (or unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Exempt a job and its images from `zmm cleanup`."""
    _set_pinned(job_id, True, as_json)


@app.command("unpin")
def unpin(
    job_id: str = typer.Argument(..., help="A job id (or unique prefix)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Make a pinned job subject to `zmm cleanup` again."""
    _set_pinned(job_id, False, as_json)


def _set_pinned(job_id: str, pinned: bool, as_json: bool) -> None:
    from zmm.cli.common import emit

    settings = load_config()
    with open_store(settings) as store:
        job, changed = store.pin(job_id, pinned)
    state = "pinned" if pinned else "unpinned"
    if as_json:
        emit_json({"id": job.id, "pinned": bool(job.pinned), "changed": changed})
        return
    emit(f"{job.id}\t{state}" + ("" if changed else f" (already {state})"))
