"""The `api_tokens` table: the bearer tokens of `zmm serve`, kept as SHA-256
digests, and the Store's methods over them (a part of zmm.store.Store, split
off like `housekeeping`; it uses the Store's connection, path and clock).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zmm.errors import NotFound
from zmm.store.db import errors_mapped, transaction, translate_errors
from zmm.timestamps import iso

COLUMNS = "id, name, requester, max_priority, created_at, revoked_at, last_used_at"


@errors_mapped
class Tokens:
    conn: sqlite3.Connection
    path: Path
    clock: Callable[[], float]

    def add_token(self, token_id: str, name: str, digest: str, *, requester: str | None,
                  max_priority: str | None) -> dict[str, Any]:
        """Record a new token by its digest; returns its row (without the digest)."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            conn.execute(
                "INSERT INTO api_tokens (id, name, token_sha256, requester, max_priority, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                [token_id, name, digest, requester, max_priority, iso(self.clock())])
        return self.token(token_id)

    def token(self, token_id: str) -> dict[str, Any]:
        with translate_errors(self.path):
            row = self.conn.execute(f"SELECT {COLUMNS} FROM api_tokens WHERE id = ?",
                                    [token_id]).fetchone()
        if row is None:
            raise NotFound(f"no token {token_id!r}", hint="`zmm serve token list` lists them")
        return dict(row)

    def tokens(self) -> list[dict[str, Any]]:
        with translate_errors(self.path):
            return [dict(row) for row in self.conn.execute(
                f"SELECT {COLUMNS} FROM api_tokens ORDER BY created_at, id")]

    def revoke_token(self, token_id: str) -> tuple[dict[str, Any], bool]:
        """Revoke a token; returns its row and whether it was live until now."""
        self.token(token_id)
        with translate_errors(self.path), transaction(self.conn) as conn:
            changed = conn.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                [iso(self.clock()), token_id]).rowcount
        return self.token(token_id), bool(changed)

    def live_token(self, digest: str) -> dict[str, Any] | None:
        """The unrevoked token with this digest, if any (its last use is not written
        here: a read on every request must not take the write lock)."""
        with translate_errors(self.path):
            row = self.conn.execute(
                f"SELECT {COLUMNS} FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
                [digest]).fetchone()
        return dict(row) if row is not None else None

    def touch_token(self, token_id: str) -> None:
        """Record that a token was used now."""
        with translate_errors(self.path), transaction(self.conn) as conn:
            conn.execute("UPDATE api_tokens SET last_used_at = ? WHERE id = ?",
                         [iso(self.clock()), token_id])
