-- zmm spool schema: the bearer tokens of `zmm serve` (docs/serve.md). Only the
-- SHA-256 of a token is kept; the token itself is shown once, when created.
-- `requester` (NULL: any) limits whose jobs it may submit and steer;
-- `max_priority` (NULL: any) is the highest priority it may ask for.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    requester TEXT,
    max_priority TEXT,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
