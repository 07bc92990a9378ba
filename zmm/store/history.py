"""Reads for `zmm history`: a filtered page of jobs, newest first, with how many
match in all, the cost of those jobs, and full-text search over prompts.

Shaped to use the spool's indexes so a page out of a million rows stays fast
(bench/history_bench.py): statuses through the partial indexes of open and
finished jobs (zmm.store.queries.status_parts), the cost sum through the small
index of costly rows, a search alone straight from the full-text index, and the
count of all jobs or of one model's from the counts the spool keeps.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from zmm.store.job_row import Job
from zmm.store.queries import status_parts


@dataclass(frozen=True)
class HistoryFilter:
    statuses: tuple[str, ...] = ()
    request_type: str | None = None
    requester: str | None = None
    model: str | None = None
    since_iso: str | None = None
    search: str | None = None
    backend: str | None = None
    error_kind: str | None = None
    batch_id: str | None = None
    limit: int = 20
    offset: int = 0


def page(conn: sqlite3.Connection, flt: HistoryFilter) -> tuple[list[Job], int]:
    """A page of jobs, newest first, and how many match in all."""
    if flt.search and flt == HistoryFilter(search=flt.search, limit=flt.limit, offset=flt.offset):
        return _search_only(conn, flt)
    total = _kept_count(conn, flt)
    if total is None:
        total = sum(conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", values).fetchone()[0]
                    for where, values, _ in _parts(flt, _history_where(flt)))
    # The page walks each part newest first and stops at the page's end; through the
    # range of an index on created_at it would sort every match, so that term is
    # unindexed here (the count above uses it: jobs_model_created, migration 0009).
    parts = _parts(flt, _history_where(flt, unindexed={"created_at"}))
    heads = " UNION ALL ".join(
        f"SELECT seq FROM (SELECT seq FROM jobs WHERE {where} ORDER BY {order} DESC LIMIT ?)"
        for where, _, order in parts)
    values = [value for _, part_values, _ in parts
              for value in (*part_values, flt.limit + flt.offset)]
    rows = conn.execute(f"SELECT * FROM jobs WHERE seq IN ({heads} ORDER BY seq DESC "
                        "LIMIT ? OFFSET ?) ORDER BY seq DESC",
                        [*values, flt.limit, flt.offset]).fetchall()
    return [Job.from_row(row) for row in rows], total


_FILTER_COLUMNS = frozenset({"request_type", "requester", "backend", "model", "created_at",
                            "error_kind", "batch_id"})


def _parts(flt: HistoryFilter, where: tuple[list[str], list[Any]]
           ) -> list[tuple[str, list[Any], str]]:
    """(where, params, order) per part: open and finished statuses each from their
    own partial index, merged by the page from both parts' newest seqs."""
    clauses, params = where
    if not flt.statuses:
        return [(" AND ".join(clauses) or "1", params, "seq")]
    return [(" AND ".join([scope, *clauses]), [*scope_params, *params], order)
            for scope, scope_params, order in status_parts(flt.statuses)]


def _kept_count(conn: sqlite3.Connection, flt: HistoryFilter) -> int | None:
    """How many jobs match, from the counts triggers keep (migration 0009), when the
    filter is a model alone or nothing; None for any other filter."""
    if flt == HistoryFilter(model=flt.model, limit=flt.limit, offset=flt.offset):
        key = f"model:{flt.model}" if flt.model else "all"
        row = conn.execute("SELECT n FROM job_counts WHERE key = ?", [key]).fetchone()
        return row[0] if row else 0
    return None


def cost(conn: sqlite3.Connection, flt: HistoryFilter) -> float:
    """What the jobs matching `flt` cost in all. Only cloud jobs cost money, so the
    sum walks the small partial index of costly rows, whatever the filter."""
    # Every filter column unindexed: an index of its own (requester, backend, ...)
    # would read every job it matches, costly or not.
    clauses, params = _history_where(flt, unindexed=_FILTER_COLUMNS, model_parts=True)
    if flt.statuses:  # the covering index holds status: no partial index to name
        clauses.insert(0, f"status IN ({','.join('?' * len(flt.statuses))})")
        params[:0] = flt.statuses
    where = " AND ".join(["cost_usd > 0", *clauses])
    row = conn.execute(f"SELECT TOTAL(cost_usd) FROM jobs WHERE {where}",
                       params).fetchone()
    return round(row[0], 6)


def _search_only(conn: sqlite3.Connection, flt: HistoryFilter) -> tuple[list[Job], int]:
    """Search alone: page and count straight from the full-text index (rowid = seq),
    rather than collecting every match to sort it."""
    query = fts_query(flt.search or "")
    total = conn.execute("SELECT COUNT(*) FROM jobs_fts WHERE jobs_fts MATCH ?", [query]).fetchone()[0]
    rows = conn.execute(
        "SELECT jobs.* FROM (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ? ORDER BY rowid DESC "
        "LIMIT ? OFFSET ?) AS hit JOIN jobs ON jobs.seq = hit.rowid ORDER BY jobs.seq DESC",
        [query, flt.limit, flt.offset]).fetchall()
    return [Job.from_row(row) for row in rows], total


def _history_where(flt: HistoryFilter, *, unindexed: frozenset[str] | set[str] = frozenset(),
                   model_parts: bool = False) -> tuple[list[str], list[Any]]:
    """Every filter but the statuses, which page and cost each express. A column
    in `unindexed` is written `+column`, which keeps SQLite from reaching for
    that column's own index. `model_parts` spells the generated `model` column
    out: an index holding a virtual column is never covering, one holding the
    columns it is made of is."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value, test in (("request_type", flt.request_type, "= ?"),
                                ("requester", flt.requester, "= ?"),
                                ("backend", flt.backend, "= ?"),
                                ("batch_id", flt.batch_id, "= ?"),
                                ("model", flt.model, "= ?"),
                                ("error_kind", flt.error_kind, "= ?"),
                                ("created_at", flt.since_iso, ">= ?")):
        if not value:
            continue
        term = "COALESCE(model_used, model_requested)" if model_parts and column == "model" \
            else column
        clauses.append(f"{'+' if column in unindexed else ''}{term} {test}")
        params.append(value)
    if flt.search:
        clauses.append("seq IN (SELECT rowid FROM jobs_fts WHERE jobs_fts MATCH ?)")
        params.append(fts_query(flt.search))
    return clauses, params


def fts_query(text: str) -> str:
    """Each word as a quoted FTS5 phrase, so user text is never FTS syntax."""
    words = [word.replace('"', '""') for word in text.split()]
    return " ".join(f'"{word}"' for word in words) or '""'
