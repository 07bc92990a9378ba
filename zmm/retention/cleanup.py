"""Retention of assets: the cleanup plan (what would be removed or compressed,
and why) and its application; a dry run reports the very plan a real run
applies. Never touches queued, running or pinned jobs, nor a path outside the
assets root (checked at plan and at removal); one run at a time. Applying lives
in `applying`, path checks in `paths`, records in `plan`, SQL in
`zmm.store.retention`, images in `zmm.assets.thumbnails`.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zmm.assets import thumbnails
from zmm.errors import Conflict, InvalidInput
from zmm.jobs import JOB_ID_LENGTH
from zmm.locks import FileLock
from zmm.retention import inputs
from zmm.retention.applying import apply
from zmm.retention.paths import SafePaths, not_a_file
from zmm.retention.plan import Compression, Criteria, Plan, Problem, Removal, Report, human_bytes, parse_size
from zmm.store import Store
from zmm.timestamps import iso

__all__ = ["Criteria", "Plan", "Report", "SafePaths", "apply", "human_bytes", "make_plan",
           "parse_size", "preview", "run"]

# A file a worker has just saved is unreferenced until its job's row is
# updated; orphans younger than this are left for a later run.
ORPHAN_GRACE_S = 3600.0


# -- running -------------------------------------------------------------------


def run(settings: Any, criteria: Criteria, *, dry_run: bool, wait: bool,
        confirm: Callable[[Plan], bool] | None, notify: Callable[[str], None]) -> Report:
    """Lock (real runs only), plan, ask `confirm` if given, apply."""
    root = settings.assets_dir
    with Store(settings.spool_path, busy_timeout_ms=settings.get("spool.busy_timeout_ms"),
               assets_root=root, read_only=dry_run) as store:
        if dry_run:
            return preview(make_plan(store, SafePaths(root), criteria, store.clock()))
        with lock(settings.home, wait=wait, notify=notify):
            plan = make_plan(store, SafePaths(root), criteria, store.clock())
            if not plan.empty and confirm is not None and not confirm(plan):
                return Report(plan, dry_run=False, declined=True)
            return apply(store, SafePaths(root), plan)  # fresh: folders are checked again


def lock(home: Path, *, wait: bool, notify: Callable[[str], None]) -> FileLock:
    """The cleanup lock, held; a second run raises Conflict (exit 5) or, with
    `wait`, polls until the first one is done."""
    held = FileLock(home / "locks" / "cleanup.lock", {"role": "cleanup"})
    announced = False
    while not held.try_acquire():
        holder = held.holder() or {}
        who = f"pid {holder['pid']}" if holder.get("pid") else "another process"
        if not wait:
            raise Conflict(f"cleanup: another zmm cleanup is running ({who})",
                           hint="it holds $ZMM_HOME/locks/cleanup.lock; try later, or pass --wait")
        if not announced:
            notify(f"waiting for another zmm cleanup ({who}) to finish")
            announced = True
        time.sleep(0.2)
    return held


def preview(plan: Plan) -> Report:
    """The report a dry run prints: the plan as if applied without a failure."""
    jobs = sum(1 for item in plan.removals if item.job_id)
    return Report(plan, dry_run=True, removed=list(plan.removals),
                  compressed=[item.public() for item in plan.compressions],
                  rows_marked=0 if plan.criteria.purge_rows else jobs,
                  rows_purged=jobs if plan.criteria.purge_rows else 0)


# -- planning ------------------------------------------------------------------


def make_plan(store: Store, paths: SafePaths, criteria: Criteria, now: float) -> Plan:
    plan = Plan(criteria, now)
    remaining = None
    if criteria.orphans or criteria.max_size is not None:
        remaining = _scan(store, paths.root, criteria, now, plan)
    _plan_jobs(store, paths, criteria, now, plan, remaining)
    return plan


def _plan_jobs(store: Store, paths: SafePaths, criteria: Criteria, now: float, plan: Plan,
               remaining: int | None) -> None:
    """One pass over finished jobs, oldest first: past the age limit -> remove;
    then, while the folder is over --max-size -> remove; else past the compress
    limit -> compress. Rows come as a stream, so memory holds only the plan."""
    age_cutoff = iso(now - criteria.older_than_s) if criteria.older_than_s is not None else None
    compress_cutoff = (iso(now - criteria.compress_older_than_s)
                       if criteria.compress_older_than_s is not None else None)
    horizon = max(filter(None, (age_cutoff, compress_cutoff)), default=None)
    cap = criteria.max_size
    input_of: dict[str, str] = {}  # removed job -> its init image's copy
    for row in store.retention_candidates(criteria.statuses, include_deleted=criteria.purge_rows):
        finished = row["finished_at"]
        over = cap is not None and remaining is not None and remaining > cap
        if not over and (horizon is None or finished >= horizon):
            break  # later rows are younger still, and the cap is met
        aged = age_cutoff is not None and finished < age_cutoff
        if row["asset_deleted_at"] is not None:  # here only to purge its row
            if aged:
                plan.removals.append(Removal(row["id"], "age", (), 0))
            continue
        files, size, problems = _job_files(paths, row)
        if problems:
            plan.refused.extend(problems)
        elif aged or over:
            plan.removals.append(Removal(row["id"], "age" if aged else "size", files, size))
            remaining = None if remaining is None else remaining - size
            if row["input_file"]:
                input_of[row["id"]] = row["input_file"]
        elif compress_cutoff is not None and finished < compress_cutoff:
            _plan_compression(paths, row, plan)
    inputs.attach(store, plan, input_of, lambda name: _stat(paths, None, name, plan.refused))
    if cap is not None and remaining is not None and remaining > cap:
        plan.notes.append(f"the assets folder stays at {human_bytes(remaining)}, over --max-size "
                          f"{human_bytes(cap)}: the rest belongs to pinned, queued or running jobs "
                          "(or to refused paths)")


def _outputs(row: Any) -> list[str]:
    names = json.loads(row["outputs"]) if row["outputs"] else []
    if row["output_path"] and row["output_path"] not in names:
        names.insert(0, row["output_path"])
    return [name for name in names if isinstance(name, str)]


def _job_files(paths: SafePaths, row: Any) -> tuple[tuple[str, ...], int, list[Problem]]:
    """The job's existing files (outputs, thumbnails, derived thumbnails, images
    without text), their size, and any path refused because it could lead
    outside the root."""
    job_id = row["id"]
    try:
        outputs = _outputs(row)
    except json.JSONDecodeError:
        return (), 0, [Problem(job_id, row["outputs"], "outputs is not a JSON list; left alone",
                               is_file=False)]
    try:
        plains = json.loads(row["plain_outputs"]) if row["plain_outputs"] else []
    except json.JSONDecodeError:
        return (), 0, [Problem(job_id, row["plain_outputs"], "plain_outputs is not a JSON "
                               "list; left alone", is_file=False)]
    names = list(outputs) + [name for name in plains if isinstance(name, str)]
    if row["thumbnail_path"]:
        names.append(row["thumbnail_path"])
    files: list[str] = []
    size = 0
    problems: list[Problem] = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        refused_before = len(problems)
        found = _stat(paths, job_id, name, problems)
        if found is not None:
            files.append(name)
            size += found
        if name in outputs and len(problems) == refused_before:
            derived = thumbnails.thumbnail_name(name)
            if derived not in seen and derived not in names:
                names.append(derived)  # thumbnails go with their images
    return tuple(files), size, problems


def _stat(paths: SafePaths, job_id: str | None, name: str, problems: list[Problem]) -> int | None:
    """Size of a regular file inside the root; None if absent or refused."""
    try:
        info = os.lstat(paths(name))
    except InvalidInput as exc:
        problems.append(Problem(job_id, name, f"refused: {exc.allowed}"))
        return None
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(Problem(job_id, name, f"cannot be read: {exc.strerror}"))
        return None
    refusal = not_a_file(info)
    if refusal:
        problems.append(Problem(job_id, name, refusal))
        return None
    return info.st_size


def _plan_compression(paths: SafePaths, row: Any, plan: Plan) -> None:
    pngs: list[str] = []
    size = 0
    for name in _outputs(row):
        if not name.lower().endswith(".png"):
            continue
        found = _stat(paths, row["id"], name, plan.refused)
        if found is not None:
            pngs.append(name)
            size += found
    if pngs:
        plan.compressions.append(Compression(row["id"], tuple(pngs), size, row["outputs"],
                                             row["output_path"]))


def _scan(store: Store, root: Path, criteria: Criteria, now: float, plan: Plan) -> int:
    """Walk the assets folder (never following symlinks): its total size, less
    the orphans planned for removal when --orphans is given."""
    referenced = ({*store.referenced_assets(), *store.referenced_inputs()} if criteria.orphans
                  else set())
    active = store.active_job_ids() if criteria.orphans else set()
    total = 0
    for relative, entry in _walk(root, ""):
        if entry.is_symlink():
            if criteria.orphans and relative not in referenced:
                plan.refused.append(Problem(None, relative, "refused: a symlink; never followed"))
            continue
        info = entry.stat(follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            continue
        total += info.st_size
        if criteria.orphans and _is_orphan(relative, entry.name, info, referenced, active, now):
            plan.removals.append(Removal(None, "orphan", (relative,), info.st_size))
            total -= info.st_size
    return total


def _is_orphan(relative: str, name: str, info: os.stat_result, referenced: set[str],
               active: set[str], now: float) -> bool:
    if relative in referenced or name[:JOB_ID_LENGTH] in active:
        return False
    if info.st_mtime > now - ORPHAN_GRACE_S:
        return False
    if name.endswith(thumbnails.THUMBNAIL_SUFFIX):
        stem = relative[: -len(thumbnails.THUMBNAIL_SUFFIX)]
        return not any(stem + suffix in referenced for suffix in (".png", ".jpg", ".jpeg", ".webp"))
    return True


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, os.DirEntry]]:
    """(relative path, entry) for everything under `folder`, sorted, not
    descending into symlinked folders."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except FileNotFoundError:
        return
    for entry in entries:
        relative = f"{prefix}{entry.name}"
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path), relative + "/")
        else:
            yield relative, entry
