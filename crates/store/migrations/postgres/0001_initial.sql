-- latchkey: initial schema (PostgreSQL).
-- Times are integer milliseconds since the Unix epoch (UTC).
-- scopes: space-separated TEXT; metadata: a JSON object as TEXT.

CREATE TABLE orgs (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL
);

CREATE INDEX orgs_created_idx ON orgs (created_at DESC, id DESC);

CREATE TABLE root_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    name          TEXT    NOT NULL,
    start         TEXT    NOT NULL,
    digest        BYTEA   NOT NULL,
    scopes        TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL,
    revoked_at    BIGINT,
    last_used_at  BIGINT
);

CREATE UNIQUE INDEX root_keys_digest_idx ON root_keys (digest);
CREATE INDEX root_keys_created_idx ON root_keys (created_at DESC, id DESC);

-- replaced_by / rotated_from are history, not foreign keys: deleting a key
-- leaves them pointing at an id that no longer exists.
CREATE TABLE api_keys (
    id             TEXT    NOT NULL PRIMARY KEY,
    org_id         TEXT    NOT NULL REFERENCES orgs (id),
    name           TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    environment    TEXT    NOT NULL,
    start          TEXT    NOT NULL,
    digest         BYTEA   NOT NULL,
    scopes         TEXT    NOT NULL,
    external_id    TEXT,
    metadata       TEXT    NOT NULL DEFAULT '{}',
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT,
    revoke_reason  TEXT,
    replaced_by    TEXT,
    rotated_from   TEXT,
    last_used_at   BIGINT
);

CREATE UNIQUE INDEX api_keys_digest_idx ON api_keys (digest);
CREATE INDEX api_keys_org_created_idx ON api_keys (org_id, created_at DESC, id DESC);
CREATE INDEX api_keys_org_external_created_idx
    ON api_keys (org_id, external_id, created_at DESC, id DESC);
