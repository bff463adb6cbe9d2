-- latchkey: the change feed (SQLite).
-- Every change to a key record that a node may hold in its cache writes a
-- row here, in the same transaction, by trigger: no code path can forget.
-- Nodes poll for rows past the last one they saw. SQLite has one writer at
-- a time, so `seq` grows in commit order. Uses (`last_used_at`) are not
-- changes. Rows are pruned after a few minutes.

CREATE TABLE changes (
    seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    tbl     TEXT    NOT NULL,
    digest  BLOB    NOT NULL,
    at      INTEGER NOT NULL
);

CREATE INDEX changes_at_idx ON changes (at);

CREATE TRIGGER api_keys_changed
AFTER UPDATE OF id, org_id, name, kind, environment, digest, scopes, external_id, metadata,
    expires_at, revoked_at, revoke_reason, replaced_by ON api_keys
BEGIN
    INSERT INTO changes (tbl, digest, at)
    VALUES ('api_keys', OLD.digest, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
BEGIN
    INSERT INTO changes (tbl, digest, at)
    VALUES ('api_keys', OLD.digest, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER root_keys_changed
AFTER UPDATE OF id, name, digest, scopes, revoked_at ON root_keys
BEGIN
    INSERT INTO changes (tbl, digest, at)
    VALUES ('root_keys', OLD.digest, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER root_keys_deleted AFTER DELETE ON root_keys
BEGIN
    INSERT INTO changes (tbl, digest, at)
    VALUES ('root_keys', OLD.digest, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
