-- latchkey: the usage log (PostgreSQL). SPEC §9 "Logs".
-- One table for both kinds of entries, so that one order (at DESC, id DESC)
-- and one cursor page through them: `kind` is 'decision' or 'action'; the
-- columns of the other kind are NULL.
-- org_id is NULL for a decision on a key that does not exist and for
-- instance-level actions (root keys): such rows are listed by no
-- organization. Not a foreign key: writing the log must never fail on it.
-- key_id of an action is its target when the target is a key, so that a
-- key's log shows what was done to it as well as its decisions.
-- at: integer milliseconds since the Unix epoch (UTC).
-- Every index costs each of the many inserts, and one by key (written at
-- random places, one row per request) cost a third of verify's throughput
-- on SQLite: the `key_id` and `code` filters read the organization's
-- entries in time order (logs_org_at_idx) and filter them; `since` bounds
-- that read.
-- Never a secret here: ids, codes, a path without its query, an IP, a
-- user agent (at most 256 characters).

CREATE TABLE logs (
    id               TEXT     NOT NULL,
    org_id           TEXT,
    at               BIGINT   NOT NULL,
    kind             TEXT     NOT NULL,
    request_id       TEXT,
    credential_type  TEXT,
    key_id           TEXT,
    client_id        TEXT,
    code             TEXT,
    status           INTEGER,
    method           TEXT,
    path             TEXT,
    ip               TEXT,
    user_agent       TEXT,
    latency_us       BIGINT,
    actor            TEXT,
    action           TEXT,
    target           TEXT
);

-- No primary key: nothing is read by id (ids are random, 130 bits), and
-- every B-tree costs each of the many inserts. Rows arrive in time order,
-- so a BRIN index on `at` (a few pages, almost free to keep) finds what
-- retention deletes.
CREATE INDEX logs_at_brin ON logs USING brin (at);

CREATE INDEX logs_org_at_idx ON logs (org_id, at DESC, id DESC);
CREATE INDEX logs_org_client_at_idx ON logs (org_id, client_id, at DESC, id DESC)
    WHERE client_id IS NOT NULL;
