"""`zmm cleanup`: retention for assets and history, safe to run from cron or
Task Scheduler (no prompt without a terminal, one run at a time, documented
exit codes). Parsing and rendering only; the plan is `zmm.cleanup`'s.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from zmm.cli.common import emit, emit_json, load_config, say
from zmm.errors import JOB_FAILED, InvalidInput
from zmm.jobs import FINISHED

app = typer.Typer(add_completion=False)


@app.command("cleanup")
def cleanup(
    older_than: Optional[str] = typer.Option(
        None, "--older-than", help="Remove assets of jobs finished longer ago than this (30d, 12h, 3mo; "
        "units s min h d w mo y; never = no age limit). Default: config retention.days."),
    status: str = typer.Option(",".join(FINISHED), "--status",
                               help="Comma list of finished states to clean."),
    max_size: Optional[str] = typer.Option(
        None, "--max-size", help="Then remove the oldest finished assets until the assets folder "
        "is under this (500MB, 10GB; none = no cap). Default: config retention.max_size."),
    orphans: bool = typer.Option(False, "--orphans",
                                 help="Also remove files no job references (older than an hour)."),
    purge_rows: bool = typer.Option(False, "--purge-rows",
                                    help="Also delete the history rows (default: keep them, with "
                                    "asset_deleted_at set)."),
    compress_older_than: Optional[str] = typer.Option(
        None, "--compress-older-than", help="Convert PNGs of jobs finished longer ago than this "
        "to JPEG (quality 80), keeping the zmm metadata."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="List what would be done; change nothing."),
    yes: bool = typer.Option(False, "--yes", "-y",
                             help="Do not ask. Asked only when stdin and stderr are terminals; "
                             "with --json on a terminal, required."),
    wait: bool = typer.Option(False, "--wait",
                              help="Wait for a running cleanup instead of exit 5."),
    verbose: bool = typer.Option(False, "--verbose", "-v",
                                 help="List every file, not only totals."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
) -> None:
    """Remove old images, thumbnails and (optionally) history rows.

    Never touches queued, running or pinned jobs (`zmm history pin ID`), nor
    anything outside the assets folder. Exit 0 done (or nothing to do), 1 some
    paths were refused or could not be removed (listed on stderr), 2 bad input,
    5 another cleanup is running, 7 the spool is unusable."""
    from zmm.retention import cleanup as service

    settings = load_config()
    criteria = _criteria(settings, older_than, status, max_size, orphans, purge_rows,
                         compress_older_than)
    ask = _asker(yes=yes, dry_run=dry_run, as_json=as_json)
    report = service.run(settings, criteria, dry_run=dry_run, wait=wait, confirm=ask, notify=say)
    if as_json:
        emit_json(report.public(settings.assets_dir))
    else:
        _render(report, verbose or dry_run)
    if not report.ok:
        say(f"error: cleanup: {len(report.plan.refused)} paths refused, {len(report.failed)} "
            "could not be removed or converted; everything else was done")
        raise typer.Exit(JOB_FAILED)


def _criteria(settings, older_than, status, max_size, orphans, purge_rows, compress_older_than):
    from zmm.retention.cleanup import Criteria, parse_size

    statuses = tuple(dict.fromkeys(s.strip().lower() for s in status.split(",") if s.strip()))
    if not statuses or any(value not in FINISHED for value in statuses):
        raise InvalidInput("status", f"a comma list of {', '.join(FINISHED)} (queued and "
                           "running jobs are never cleaned)")
    days = settings.get("retention.days")
    age = _duration("older-than", older_than) if older_than is not None else (
        days * 86400.0 if days > 0 else None)
    cap = parse_size(max_size if max_size is not None else settings.get("retention.max_size"),
                     "max-size" if max_size is not None else "retention.max_size")
    compress = (_duration("compress-older-than", compress_older_than)
                if compress_older_than else None)
    return Criteria(statuses=statuses, older_than_s=age, max_size=cap, orphans=orphans,
                    purge_rows=purge_rows, compress_older_than_s=compress)


def _duration(name: str, text: str) -> float | None:
    from zmm import durations

    return durations.parse(name, text, words={"never": None, "none": None, "off": None})


def _asker(*, yes: bool, dry_run: bool, as_json: bool):
    """Who confirms: nobody with --yes or --dry-run, or without a terminal on stdin
    (cron, a pipe: the documented unattended run). A question is asked only when
    stdin and stderr are both terminals and no program reads --json; a terminal
    that cannot be asked (--json, stderr redirected) is refused, never left hanging."""
    if yes or dry_run or not sys.stdin.isatty():
        return None
    if as_json or not sys.stderr.isatty():
        why = "--json never asks" if as_json else "stderr is not a terminal to ask on"
        raise InvalidInput("yes", f"{why}: pass --yes to clean, or --dry-run to see the plan")
    return _confirm


def _confirm(plan) -> bool:
    import contextlib

    summary = plan.summary()
    # click's prompt writes a space through input() to stdout; stdout is for data only
    with contextlib.redirect_stdout(sys.stderr):
        return typer.confirm(f"{summary[0].upper()}{summary[1:]}?", default=False, err=True)


def _render(report, listing: bool) -> None:
    for line in report.listing() if listing else ():
        emit(line)
    for line in report.problems():
        say(line)
    if report.declined:
        say("cancelled: nothing was removed")
    else:
        emit(report.summary())
