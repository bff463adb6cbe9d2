-- latchkey: the change feed (PostgreSQL).
-- Every change to a key record that a node may hold in its cache sends a
-- notification on channel `latchkey_changes`, by trigger, so no code path
-- can forget. PostgreSQL delivers it at commit to every listening node.
-- The payload is `<table>:<hex digest>`: the digest is what caches are
-- keyed by, and is not a secret (it is the SHA-256 of a 228-bit random key).
-- Uses (`last_used_at`) are not changes.

CREATE FUNCTION latchkey_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', TG_TABLE_NAME || ':' || encode(OLD.digest, 'hex'));
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_changed
AFTER UPDATE OF id, org_id, name, kind, environment, digest, scopes, external_id, metadata,
    expires_at, revoked_at, revoke_reason, replaced_by OR DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_change();

CREATE TRIGGER root_keys_changed
AFTER UPDATE OF id, name, digest, scopes, revoked_at OR DELETE ON root_keys
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_change();
