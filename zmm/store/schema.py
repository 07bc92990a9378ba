"""The spool's schema as data: its tables, columns, indexes and triggers, read
through sqlite-utils' introspection, and how a spool differs from what the
migrations create (for `zmm doctor`). Reads only; never migrates or repairs.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from zmm.store.db import _statements, migrations


@dataclass
class Differences:
    """What a spool lacks or changed (breaks zmm) and what it has in addition
    (someone's own tables or indexes: zmm ignores them)."""

    version: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def shape(conn: sqlite3.Connection) -> dict[str, Any]:
    """{"table <name>": columns, "index <table>.<name>": definition, "trigger <name>": table}."""
    import sqlite_utils  # only `zmm doctor` pays for it

    db = sqlite_utils.Database(conn, recursive_triggers=False)
    # A partial index is used only for queries that repeat its condition word for
    # word (zmm.store.queries.OPEN, DONE), so the condition is part of its shape.
    conditions = {name: " ".join((sql or "").split()).partition(" WHERE ")[2]
                  for name, sql in db.execute("SELECT name, sql FROM sqlite_master "
                                              "WHERE type = 'index'")}
    found: dict[str, Any] = {}
    for table in db.tables:
        found[f"table {table.name}"] = [(c.name, c.type.upper(), bool(c.notnull), c.is_pk)
                                        for c in table.columns]
        for index in table.indexes:
            if index.origin == "c":  # created by CREATE INDEX, not by a UNIQUE or a key
                found[f"index {table.name}.{index.name}"] = (
                    tuple(index.columns), bool(index.unique), conditions.get(index.name, ""))
    for trigger in db.triggers:
        found[f"trigger {trigger.name}"] = trigger.table
    return found


def expected(version: int) -> dict[str, Any]:
    """The shape the first `version` migrations give a new spool."""
    conn = sqlite3.connect(":memory:")
    try:
        for number, _name, script in migrations():
            if number > version:
                break
            for statement in _statements(script):
                conn.execute(statement)
        return shape(conn)
    finally:
        conn.close()


def compare(conn: sqlite3.Connection) -> Differences:
    """How the spool on `conn` differs from the schema its user_version names."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    have, want = shape(conn), expected(version)
    result = Differences(version)
    for name, definition in want.items():
        if name not in have:
            result.missing.append(f"no {name}")
        elif have[name] != definition:
            result.missing.append(f"{name} differs: {_describe(have[name])}, "
                                  f"expected {_describe(definition)}")
    result.extra = [name for name in have if name not in want]
    return result


def _describe(definition: Any) -> str:
    if isinstance(definition, list):  # a table's columns
        return "columns " + ", ".join(name for name, *_ in definition)
    return str(definition)
