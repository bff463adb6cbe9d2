-- latchkey: a key's own rate limit, IP allowlist and usage credits.
-- ip_allowlist: space-separated CIDRs ('' = any address).
-- remaining: credits left (NULL = unlimited); at each refill_interval_ms
-- after refilled_at it is set back to refill_amount.

ALTER TABLE api_keys ADD COLUMN ratelimit_limit INTEGER;
ALTER TABLE api_keys ADD COLUMN ratelimit_window_ms INTEGER;
ALTER TABLE api_keys ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN remaining INTEGER;
ALTER TABLE api_keys ADD COLUMN refill_amount INTEGER;
ALTER TABLE api_keys ADD COLUMN refill_interval_ms INTEGER;
ALTER TABLE api_keys ADD COLUMN refilled_at INTEGER;

-- Changes to these reach every node's cache (0002_changes.sql). Spending a
-- credit (remaining, refilled_at) is not a change: credits are always
-- spent in the database. A PATCH sets updated_at, so it always is one.
DROP TRIGGER api_keys_changed;
CREATE TRIGGER api_keys_changed
AFTER UPDATE OF id, org_id, name, kind, environment, digest, scopes, external_id, metadata,
    updated_at, expires_at, revoked_at, revoke_reason, replaced_by, ratelimit_limit,
    ratelimit_window_ms, ip_allowlist, refill_amount, refill_interval_ms ON api_keys
BEGIN
    INSERT INTO changes (tbl, digest, at)
    VALUES ('api_keys', OLD.digest, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
