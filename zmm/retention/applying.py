"""Applying a cleanup plan: rows marked first (guarded: still finished and
unpinned), then only those rows' files removed, and rows restored whose files
resisted; compressions rewrite an old PNG as JPEG and record it. Files are
touched only through the checked paths of zmm.retention.paths.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from zmm import assets
from zmm.assets import thumbnails
from zmm.errors import InvalidInput
from zmm.jsontext import compact
from zmm.retention.paths import SafePaths, not_a_file
from zmm.retention.plan import Compression, Plan, Problem, Removal, Report, human_bytes
from zmm.store import Store
from zmm.timestamps import iso

BATCH = 500  # jobs per guarded mark transaction: short write locks, few commits


def apply(store: Store, paths: SafePaths, plan: Plan) -> Report:
    report = Report(plan, dry_run=False)
    stamp = iso(store.clock())
    jobs = [item for item in plan.removals if item.job_id]
    for start in range(0, len(jobs), BATCH):
        _remove_batch(store, paths, jobs[start:start + BATCH], stamp, report)
    for item in plan.removals:
        if item.job_id is None:
            removed, size, _ = _unlink_all(paths, item, report)
            if removed:
                report.removed.append(Removal(None, item.reason, removed, size))
    for compression in plan.compressions:
        _compress(store, paths.root, compression, report)
    return report


def _remove_batch(store: Store, paths: SafePaths, batch: list[Removal], stamp: str,
                  report: Report) -> None:
    """Mark the rows first (guarded: still finished and unpinned), delete only
    the files of rows that passed, then restore rows whose files resisted."""
    marked = store.mark_assets_deleted(
        [(item.job_id, f"cleanup ({item.reason}): {len(item.files)} files, "
          f"{human_bytes(item.size)}") for item in batch if item.job_id is not None], stamp)
    done: list[str] = []
    kept: list[tuple[str, str]] = []
    try:
        for item in batch:
            if item.job_id not in marked:
                report.skipped.append(Problem(item.job_id, "", "changed since the plan (pinned, "
                                              "retried or purged); left alone"))
                continue
            errors = _remove_job(paths, item, report)
            if errors:
                kept.append((item.job_id, "cleanup could not remove: " + "; ".join(errors)))
            else:
                done.append(item.job_id)
    except BaseException:
        # Ctrl-C mid-batch: rows whose files were not all removed must not claim so,
        # or no later run would consider them again.
        finished = set(done) | {job_id for job_id, _ in kept}
        kept += [(item.job_id, "cleanup interrupted") for item in batch
                 if item.job_id in marked and item.job_id not in finished]
        raise
    finally:
        store.restore_assets(kept, stamp)
    if report.plan.criteria.purge_rows:
        report.rows_purged += store.purge_jobs(done)
    else:
        report.rows_marked += len(done)


def _remove_job(paths: SafePaths, item: Removal, report: Report) -> list[str]:
    removed, size, errors = _unlink_all(paths, item, report)
    if removed == item.files:  # the usual case: share the plan's record, not a copy
        item.size = size
        report.removed.append(item)
    elif removed or not errors:  # a row-only removal (nothing on disk) counts too
        report.removed.append(Removal(item.job_id, item.reason, removed, size))
    return errors


def _unlink_all(paths: SafePaths, item: Removal,
                report: Report) -> tuple[tuple[str, ...], int, list[str]]:
    """Delete a record's files; returns what was removed, its size, and errors
    (also added to the report)."""
    removed: list[str] = []
    size = 0
    errors: list[str] = []
    for name in item.files:
        try:
            path = paths(name)  # again: the tree may have changed since the plan
            info = os.lstat(path)
            refusal = not_a_file(info)
            if refusal:
                raise InvalidInput("path", refusal)
            os.unlink(path)
        except FileNotFoundError:
            continue  # gone meanwhile: nothing to do, nothing to report twice
        except InvalidInput as exc:
            errors.append(f"{name}: {exc.allowed}" if exc.allowed.startswith("refused")
                          else f"{name}: refused: {exc.allowed}")
        except OSError as exc:
            errors.append(f"{name}: not removed: {exc.strerror or exc}")
        else:
            removed.append(name)
            size += info.st_size
            continue
        report.failed.append(Problem(item.job_id, name, errors[-1].partition(": ")[2]))
    return tuple(removed), size, errors


def _compress(store: Store, root: Path, item: Compression, report: Report) -> None:
    """Write the JPEGs, point the row at them (guarded), then delete the PNGs."""
    saved: dict[str, assets.SavedFile] = {}
    for name in item.files:
        try:
            saved[name] = thumbnails.compress_to_jpeg(root, name)
        except (assets.AssetWriteError, InvalidInput, OSError) as exc:
            report.failed.append(Problem(item.job_id, name, str(exc)))
            _discard(root, [done.relative for done in saved.values()])
            return
    outputs = [saved[name].relative if name in saved else name
               for name in (json.loads(item.outputs) if item.outputs else [])]
    first = saved.get(item.output_path or "")
    fields: dict[str, Any] = {"output_path": first.relative if first else item.output_path}
    if item.outputs is not None:
        fields["outputs"] = compact(outputs)
    if first:
        fields.update(file_size_bytes=first.size, sha256=first.sha256)
    after = sum(done.size for done in saved.values())
    message = (f"cleanup: {len(saved)} PNGs to JPEG, "
               f"{human_bytes(item.size)} -> {human_bytes(after)}")
    if not store.record_compression(item.job_id, item.outputs, fields, message):
        _discard(root, [done.relative for done in saved.values()])
        report.skipped.append(Problem(item.job_id, "", "changed since the plan; not compressed"))
        return
    _unlink_all(SafePaths(root), Removal(item.job_id, "compressed", item.files, item.size), report)
    report.compressed.append(dict(item.public(), bytes_after=after))


def _discard(root: Path, names: list[str]) -> None:
    for name in names:
        try:
            assets.safe_path(root, name).unlink()
        except (OSError, InvalidInput):
            continue  # best effort: a leftover JPEG is an orphan for a later run
