-- latchkey: the console (PostgreSQL). SPEC §11; docs/console.md.

-- Who created a key: a console user (usr_...), a root key (rtk_...) or
-- `cli`. NULL for keys made before this column existed. A console
-- `member` manages only the keys it created. Never changed after
-- creation, so not part of the change feed's trigger.
ALTER TABLE api_keys ADD COLUMN created_by TEXT;

-- The API Keys page's search: a name prefix in any case, or the start of
-- a key (`sk_live_AbCd`). Each reads one range of an index and stops at
-- the page's end, whatever the number of keys. Byte order ("C"), so that
-- a prefix is one range.
CREATE INDEX api_keys_org_name_idx ON api_keys (org_id, (lower(name) COLLATE "C"), id);
CREATE INDEX api_keys_org_start_idx ON api_keys (org_id, start COLLATE "C", id);

-- Console sign-in by email: the accounts with that email, in any
-- organization.
CREATE INDEX users_email_idx ON users (email);

-- Console sessions. The cookie holds a random token; only its SHA-256
-- (`digest`) is stored. `user_ids`: the accounts (space-separated
-- `usr_...`) whose password was checked at sign-in (one email may have
-- an account in several organizations); `root_key_digest`: the root key
-- a session was opened with (it ends when the key is revoked). A session
-- ends at `expires_at`, or when idle since `seen_at` for too long, or at
-- sign-out (the row is deleted).
CREATE TABLE console_sessions (
    digest           BYTEA   NOT NULL PRIMARY KEY,
    user_ids         TEXT    NOT NULL DEFAULT '',
    root_key_digest  BYTEA,
    created_at       BIGINT  NOT NULL,
    seen_at          BIGINT  NOT NULL,
    expires_at       BIGINT  NOT NULL
);

CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);

-- Decisions per organization, hour and code: what the API Logs chart
-- draws. Kept by the log writer in the same transaction as the entries
-- (one upsert per organization, hour and code of a batch), so that the
-- chart reads at most one row per hour and code rather than every entry.
-- hour: the start of the hour, ms since the Unix epoch.
CREATE TABLE log_hours (
    org_id  TEXT    NOT NULL,
    hour    BIGINT  NOT NULL,
    code    TEXT    NOT NULL,
    n       BIGINT  NOT NULL,
    PRIMARY KEY (org_id, hour, code)
);

INSERT INTO log_hours (org_id, hour, code, n)
SELECT org_id, at - (at % 3600000), code, COUNT(*)
FROM logs
WHERE kind = 'decision' AND org_id IS NOT NULL AND code IS NOT NULL
GROUP BY org_id, at - (at % 3600000), code;
