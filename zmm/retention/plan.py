"""The vocabulary of `zmm cleanup`: the criteria, the plan's records (removals,
compressions, refused paths), the report with its stable `--json` shape, and
parsing/printing sizes. Plain data: no I/O, no SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zmm.assets import thumbnails
from zmm.errors import InvalidInput
from zmm.jobs import FINISHED

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str, field_name: str = "max-size") -> int | None:
    """`10GB`, `500MB`, `1.5GiB`, `2048` (bytes) -> bytes; `""` or `none` -> no cap.
    KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    match = _SIZE.match(text)
    if not match or (match.group(3) and not match.group(2)):
        raise InvalidInput(field_name, "a size such as 500MB, 10GB or 2GiB ('' or none: no cap)")
    base = 1024 if match.group(3) else 1000
    return int(float(match.group(1)) * base ** _POWER[match.group(2).lower()])


def human_bytes(size: float) -> str:
    units = ("B", "KB", "MB", "GB", "TB")
    index = 0
    while abs(size) >= 1000 and index < len(units) - 1:
        size /= 1000
        index += 1
    return f"{size:.0f} B" if index == 0 else f"{size:.1f} {units[index]}"


@dataclass(frozen=True)
class Criteria:
    statuses: tuple[str, ...] = FINISHED
    older_than_s: float | None = 30 * 86400.0  # None: no age limit
    max_size: int | None = None
    orphans: bool = False
    purge_rows: bool = False
    compress_older_than_s: float | None = None


@dataclass(slots=True)
class Removal:
    job_id: str | None  # None for an orphan file
    reason: str  # age | size | orphan
    files: tuple[str, ...]
    size: int

    def public(self) -> dict[str, Any]:
        return {"id": self.job_id, "reason": self.reason, "files": list(self.files),
                "bytes": self.size}

    def public_with(self, assets_root: Path) -> dict[str, Any]:
        return dict(self.public(), absolute_files=_absolute(assets_root, self.files))


@dataclass(slots=True)
class Compression:
    job_id: str
    files: tuple[str, ...]  # the PNGs to convert
    size: int
    outputs: str | None  # the row's outputs as planned: the guard for its update
    output_path: str | None

    def public(self) -> dict[str, Any]:
        return {"id": self.job_id, "files": list(self.files),
                "to": [thumbnails.jpeg_name(name) for name in self.files], "bytes": self.size}


@dataclass(frozen=True, slots=True)
class Problem:
    job_id: str | None
    path: str  # relative to the assets root; "" or a column's text when no file is meant
    reason: str
    is_file: bool = True

    def public(self) -> dict[str, Any]:
        return {"id": self.job_id, "path": self.path, "reason": self.reason}

    def public_with(self, assets_root: Path) -> dict[str, Any]:
        absolute = str(assets_root / self.path) if self.is_file and self.path else None
        return dict(self.public(), absolute_path=absolute)


def _absolute(assets_root: Path, names: Iterable[str]) -> list[str]:
    return [str(assets_root / name) for name in names]


@dataclass
class Plan:
    criteria: Criteria
    now: float
    removals: list[Removal] = field(default_factory=list)
    compressions: list[Compression] = field(default_factory=list)
    refused: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.removals and not self.compressions

    def summary(self) -> str:
        files = sum(len(item.files) for item in self.removals)
        size = sum(item.size for item in self.removals)
        jobs = sum(1 for item in self.removals if item.job_id)
        rows = ("delete their history rows" if self.criteria.purge_rows
                else "keep their history rows")
        text = f"remove {files} files ({human_bytes(size)}) of {jobs} jobs and {rows}"
        if self.compressions:
            text += f", compress {len(self.compressions)} jobs' PNGs to JPEG"
        return text


@dataclass
class Report:
    plan: Plan
    dry_run: bool
    declined: bool = False
    removed: list[Removal] = field(default_factory=list)
    compressed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)
    skipped: list[Problem] = field(default_factory=list)
    rows_marked: int = 0
    rows_purged: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.plan.refused

    def totals(self) -> dict[str, int]:
        return {
            "jobs": sum(1 for item in self.removed if item.job_id),
            "files": sum(len(item.files) for item in self.removed),
            "bytes": sum(item.size for item in self.removed),
            "rows_marked": self.rows_marked, "rows_purged": self.rows_purged,
            "compressed": len(self.compressed),
            "bytes_saved": sum(item["bytes"] - item.get("bytes_after", item["bytes"])
                               for item in self.compressed),
            "refused": len(self.plan.refused), "failed": len(self.failed),
        }

    def summary(self) -> str:
        """The one line a run prints on stdout."""
        totals = self.totals()
        if not any(totals[key] for key in ("files", "rows_marked", "rows_purged", "compressed")):
            return "nothing to clean"
        dry = self.dry_run
        rows = (f"{'would delete' if dry else 'deleted'} {totals['rows_purged']} history rows"
                if self.plan.criteria.purge_rows else
                f"{'would keep' if dry else 'kept'} {totals['rows_marked']} history rows")
        line = (f"{'would remove' if dry else 'removed'} {totals['files']} files "
                f"({human_bytes(totals['bytes'])}) of {totals['jobs']} jobs; {rows}")
        if totals["compressed"]:
            line += f"; {'would compress' if dry else 'compressed'} {totals['compressed']} jobs"
            line += "" if dry else f" (saved {human_bytes(totals['bytes_saved'])})"
        return line

    def listing(self) -> Iterator[str]:
        """`reason<TAB>job<TAB>path` per file (what --dry-run and --verbose print)."""
        for item in self.removed:
            for name in item.files:
                yield f"{item.reason}\t{item.job_id or '-'}\t{name}"
        for entry in self.compressed:
            for name, target in zip(entry["files"], entry["to"], strict=False):
                yield f"compress\t{entry['job_id']}\t{name} -> {target}"

    def problems(self) -> Iterator[str]:
        """stderr lines: refused and failed paths, notes, jobs skipped."""
        for problem in [*self.plan.refused, *self.failed]:
            yield f"{problem.job_id or '-'}\t{problem.path}\t{problem.reason}"
        yield from self.plan.notes
        for problem in self.skipped:
            yield f"skipped {problem.job_id}: {problem.reason}"

    def public(self, assets_root: Path) -> dict[str, Any]:
        """The --json report; every path relative to `assets_root` also comes
        absolute (absolute_files, absolute_to, absolute_path)."""
        criteria = self.plan.criteria
        return {
            "dry_run": self.dry_run, "declined": self.declined, "ok": self.ok,
            "criteria": {"statuses": list(criteria.statuses), "older_than_s": criteria.older_than_s,
                         "max_size_bytes": criteria.max_size, "orphans": criteria.orphans,
                         "purge_rows": criteria.purge_rows,
                         "compress_older_than_s": criteria.compress_older_than_s},
            "removals": [item.public_with(assets_root) for item in self.removed],
            "compressions": [dict(item, absolute_files=_absolute(assets_root, item["files"]),
                                  absolute_to=_absolute(assets_root, item["to"]))
                             for item in self.compressed],
            "refused": [item.public_with(assets_root) for item in self.plan.refused],
            "failed": [item.public_with(assets_root) for item in self.failed],
            "skipped": [item.public_with(assets_root) for item in self.skipped],
            "notes": self.plan.notes, "totals": self.totals(),
        }
