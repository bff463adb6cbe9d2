//! SQL text shared by both backends. SQLite accepts PostgreSQL's `$N`
//! placeholders (the same number may appear more than once), row values
//! (`(a, b) < ($1, $2)`) and `RETURNING`, so every statement here runs on
//! both; nothing in this crate needs a dialect-specific statement yet.
//!
//! Lists are newest first, ordered by `(created_at DESC, id DESC)`; a keyset
//! cursor `(created_at, id)` selects the rows strictly after it in that order.
//! Filters are spelled out as separate statements rather than
//! `($n IS NULL OR ...)` so that each one can use its index.

macro_rules! org_cols {
    () => {
        "id, name, created_at"
    };
}

macro_rules! root_key_cols {
    () => {
        "id, name, start, digest, scopes, created_at, revoked_at, last_used_at"
    };
}

macro_rules! key_cols {
    () => {
        "id, org_id, name, kind, environment, start, digest, scopes, external_id, metadata, \
         created_at, updated_at, expires_at, revoked_at, revoke_reason, replaced_by, \
         rotated_from, last_used_at, ratelimit_limit, ratelimit_window_ms, ip_allowlist, \
         remaining, refill_amount, refill_interval_ms, refilled_at, created_by"
    };
}

pub(crate) use key_cols;

pub(crate) const PING: &str = "SELECT 1";

// ---- orgs ---------------------------------------------------------------

pub(crate) const INSERT_ORG: &str = "INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)";

pub(crate) const GET_ORG: &str = concat!("SELECT ", org_cols!(), " FROM orgs WHERE id = $1");

/// `$1` = limit.
pub(crate) const LIST_ORGS: &str = concat!(
    "SELECT ",
    org_cols!(),
    " FROM orgs ORDER BY created_at DESC, id DESC LIMIT $1"
);

/// `$1` = limit, `($2, $3)` = cursor.
pub(crate) const LIST_ORGS_AFTER: &str = concat!(
    "SELECT ",
    org_cols!(),
    " FROM orgs WHERE (created_at, id) < ($2, $3)",
    " ORDER BY created_at DESC, id DESC LIMIT $1"
);

// ---- root keys ----------------------------------------------------------

pub(crate) const INSERT_ROOT_KEY: &str = concat!(
    "INSERT INTO root_keys (",
    root_key_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
);

pub(crate) const ROOT_KEY_BY_DIGEST: &str = concat!(
    "SELECT ",
    root_key_cols!(),
    " FROM root_keys WHERE digest = $1"
);

pub(crate) const GET_ROOT_KEY: &str =
    concat!("SELECT ", root_key_cols!(), " FROM root_keys WHERE id = $1");

/// `$1` = limit.
pub(crate) const LIST_ROOT_KEYS: &str = concat!(
    "SELECT ",
    root_key_cols!(),
    " FROM root_keys ORDER BY created_at DESC, id DESC LIMIT $1"
);

/// `$1` = limit, `($2, $3)` = cursor.
pub(crate) const LIST_ROOT_KEYS_AFTER: &str = concat!(
    "SELECT ",
    root_key_cols!(),
    " FROM root_keys WHERE (created_at, id) < ($2, $3)",
    " ORDER BY created_at DESC, id DESC LIMIT $1"
);

/// `$1` = id, `$2` = at. Leaves a key that already stops working at or
/// before `at` alone.
pub(crate) const REVOKE_ROOT_KEY: &str = "UPDATE root_keys SET revoked_at = $2 \
     WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2)";

pub(crate) const COUNT_ROOT_KEYS: &str = "SELECT COUNT(*) FROM root_keys";

// ---- api keys -----------------------------------------------------------

pub(crate) const INSERT_KEY: &str = concat!(
    "INSERT INTO api_keys (",
    key_cols!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,",
    " $19, $20, $21, $22, $23, $24, $25, $26)"
);

pub(crate) const KEY_BY_DIGEST: &str =
    concat!("SELECT ", key_cols!(), " FROM api_keys WHERE digest = $1");

/// `$1` = the digests (PostgreSQL: coalesced lookups, see `pg_lookup`).
pub(crate) const KEYS_BY_DIGESTS: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE digest = ANY($1)"
);

pub(crate) const GET_KEY: &str = concat!("SELECT ", key_cols!(), " FROM api_keys WHERE id = $1");

pub(crate) const KEY_EXISTS: &str = "SELECT 1 FROM api_keys WHERE id = $1";

/// `$1` = org, `$2` = limit.
pub(crate) const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE org_id = $1",
    " ORDER BY created_at DESC, id DESC LIMIT $2"
);

/// `$1` = org, `$2` = limit, `($3, $4)` = cursor.
pub(crate) const LIST_KEYS_AFTER: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE org_id = $1 AND (created_at, id) < ($3, $4)",
    " ORDER BY created_at DESC, id DESC LIMIT $2"
);

/// `$1` = org, `$2` = limit, `$3` = external id.
pub(crate) const LIST_KEYS_EXTERNAL: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE org_id = $1 AND external_id = $3",
    " ORDER BY created_at DESC, id DESC LIMIT $2"
);

/// `$1` = org, `$2` = limit, `$3` = external id, `($4, $5)` = cursor.
pub(crate) const LIST_KEYS_EXTERNAL_AFTER: &str = concat!(
    "SELECT ",
    key_cols!(),
    " FROM api_keys WHERE org_id = $1 AND external_id = $3 AND (created_at, id) < ($4, $5)",
    " ORDER BY created_at DESC, id DESC LIMIT $2"
);

/// `$1` = id; `$2` name, `$3` scopes, `$4` metadata (NULL = unchanged);
/// `$5` set expiry?, `$6` expiry; `$7` set external id?, `$8` external id;
/// `$9` = updated_at; `$10` set rate limit?, `$11` limit, `$12` window;
/// `$13` allowlist (NULL = unchanged); `$14` set credits?, `$15` remaining,
/// `$16` refill amount, `$17` refill interval, `$18` refilled at.
pub(crate) const UPDATE_KEY: &str = concat!(
    "UPDATE api_keys SET",
    " name = COALESCE($2, name),",
    " scopes = COALESCE($3, scopes),",
    " metadata = COALESCE($4, metadata),",
    " expires_at = CASE WHEN $5 THEN $6 ELSE expires_at END,",
    " external_id = CASE WHEN $7 THEN $8 ELSE external_id END,",
    " updated_at = $9,",
    " ratelimit_limit = CASE WHEN $10 THEN $11 ELSE ratelimit_limit END,",
    " ratelimit_window_ms = CASE WHEN $10 THEN $12 ELSE ratelimit_window_ms END,",
    " ip_allowlist = COALESCE($13, ip_allowlist),",
    " remaining = CASE WHEN $14 THEN $15 ELSE remaining END,",
    " refill_amount = CASE WHEN $14 THEN $16 ELSE refill_amount END,",
    " refill_interval_ms = CASE WHEN $14 THEN $17 ELSE refill_interval_ms END,",
    " refilled_at = CASE WHEN $14 THEN $18 ELSE refilled_at END",
    " WHERE id = $1 RETURNING ",
    key_cols!()
);

/// `$1` = id, `$2` = now. Spends one credit, first setting `remaining`
/// back to `refill_amount` (and moving `refilled_at` by whole intervals)
/// when a refill is due. No row: nothing to spend (or no credits at all).
pub(crate) const SPEND_CREDIT: &str = concat!(
    "UPDATE api_keys SET",
    " remaining = CASE WHEN refill_interval_ms IS NOT NULL AND $2 >= refilled_at + refill_interval_ms",
    " THEN refill_amount - 1 ELSE remaining - 1 END,",
    " refilled_at = CASE WHEN refill_interval_ms IS NOT NULL AND $2 >= refilled_at + refill_interval_ms",
    " THEN refilled_at + (($2 - refilled_at) / refill_interval_ms) * refill_interval_ms",
    " ELSE refilled_at END",
    " WHERE id = $1 AND remaining IS NOT NULL AND (remaining > 0 OR (refill_interval_ms IS NOT NULL",
    " AND $2 >= refilled_at + refill_interval_ms AND refill_amount > 0))",
    " RETURNING remaining"
);

pub(crate) const KEY_REMAINING: &str = "SELECT remaining FROM api_keys WHERE id = $1";

/// `$1` = id, `$2` = at, `$3` = reason. Leaves a key that already stops
/// working at or before `at` alone.
pub(crate) const REVOKE_KEY: &str = "UPDATE api_keys SET revoked_at = $2, revoke_reason = $3 \
     WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2)";

/// `$1` = old id, `$2` = new id, `$3` = old_until, `$4` = now. All right-hand
/// sides see the row as it was, so the order of the assignments is moot.
/// `revoked_at` becomes `min(revoked_at, old_until)`; the reason becomes
/// `rotated` only when that sets or lowers it.
pub(crate) const ROTATE_OLD_KEY: &str = concat!(
    "UPDATE api_keys SET",
    " replaced_by = $2,",
    " revoke_reason = CASE WHEN revoked_at IS NULL OR revoked_at > $3",
    " THEN 'rotated' ELSE revoke_reason END,",
    " revoked_at = CASE WHEN revoked_at IS NULL OR revoked_at > $3",
    " THEN $3 ELSE revoked_at END",
    " WHERE id = $1 AND replaced_by IS NULL AND (revoked_at IS NULL OR revoked_at > $4)",
    " RETURNING ",
    key_cols!()
);

pub(crate) const DELETE_KEY: &str = "DELETE FROM api_keys WHERE id = $1";

/// Batched `last_used_at` updates: `$1` is a JSON array of `[id, at]`.
/// Each backend unpacks it its own way; the rest is shared.
macro_rules! touch {
    ($table:literal, $rows:literal) => {
        concat!(
            "UPDATE ",
            $table,
            " SET last_used_at = u.at FROM (",
            $rows,
            ") AS u \
             WHERE ",
            $table,
            ".id = u.id \
             AND (",
            $table,
            ".last_used_at IS NULL OR ",
            $table,
            ".last_used_at < u.at)"
        )
    };
}

pub(crate) const SQLITE_TOUCH_KEYS: &str = touch!(
    "api_keys",
    "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at FROM json_each($1)"
);
pub(crate) const SQLITE_TOUCH_ROOT_KEYS: &str = touch!(
    "root_keys",
    "SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at FROM json_each($1)"
);
pub(crate) const PG_TOUCH_KEYS: &str = touch!(
    "api_keys",
    "SELECT e->>0 AS id, (e->>1)::bigint AS at FROM jsonb_array_elements($1::jsonb) AS e"
);
pub(crate) const PG_TOUCH_ROOT_KEYS: &str = touch!(
    "root_keys",
    "SELECT e->>0 AS id, (e->>1)::bigint AS at FROM jsonb_array_elements($1::jsonb) AS e"
);

// ---- usage log ------------------------------------------------------------
// Inserts and lists are built at run time (a batch's size, the filters
// given): see `impl_store!`.

/// `$1` = before (ms), `$2` = most rows deleted by this statement.
/// `$1` = before, `$2` = most rows. SQLite: the table is ordered by its
/// primary key `(at, id)`.
pub(crate) const SQLITE_PRUNE_LOGS: &str = "DELETE FROM logs WHERE (at, id) IN \
     (SELECT at, id FROM logs WHERE at < $1 ORDER BY at LIMIT $2)";
/// PostgreSQL: no primary key; rows by their physical address.
pub(crate) const PG_PRUNE_LOGS: &str =
    "DELETE FROM logs WHERE ctid IN (SELECT ctid FROM logs WHERE at < $1 LIMIT $2)";
