-- latchkey: the OAuth 2.0 authorization server (PostgreSQL).
-- Secrets (client secrets, codes, refresh tokens, opaque access tokens) are
-- stored as SHA-256 digests: each is 256 bits of randomness, so a fast
-- digest is right. What must be usable again (signing keys, HS256 client
-- secrets) is sealed with the master key (AES-256-GCM) before it gets here.
-- redirect_uris: a JSON array as TEXT; grant_types, scopes: space-separated.

CREATE TABLE clients (
    id                          TEXT     NOT NULL PRIMARY KEY,
    org_id                      TEXT     NOT NULL REFERENCES orgs (id),
    name                        TEXT     NOT NULL,
    public                      BOOLEAN  NOT NULL,
    secret_digest               BYTEA,
    secret_sealed               BYTEA,
    redirect_uris               TEXT     NOT NULL,
    grant_types                 TEXT     NOT NULL,
    scopes                      TEXT     NOT NULL,
    token_endpoint_auth_method  TEXT     NOT NULL,
    jwks                        TEXT,
    jwt_auth_alg                TEXT,
    require_pkce                BOOLEAN  NOT NULL,
    created_at                  BIGINT   NOT NULL,
    updated_at                  BIGINT   NOT NULL,
    secret_rotated_at           BIGINT
);

CREATE INDEX clients_org_created_idx ON clients (org_id, created_at DESC, id DESC);

-- email is stored lower-cased; one account per address in an organization.
CREATE TABLE users (
    id             TEXT    NOT NULL PRIMARY KEY,
    org_id         TEXT    NOT NULL REFERENCES orgs (id),
    email          TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    created_at     BIGINT  NOT NULL
);

CREATE UNIQUE INDEX users_org_email_idx ON users (org_id, email);
CREATE INDEX users_org_created_idx ON users (org_id, created_at DESC, id DESC);

-- The keys access tokens are signed with. The newest key not retired signs;
-- a retired key stays published in the JWKS until its tokens have expired.
CREATE TABLE signing_keys (
    kid             TEXT    NOT NULL PRIMARY KEY,
    alg             TEXT    NOT NULL,
    public_jwk      TEXT    NOT NULL,
    private_sealed  BYTEA   NOT NULL,
    created_at      BIGINT  NOT NULL,
    retired_at      BIGINT
);

-- One authorization: what a user (or, for client_credentials, nobody)
-- granted a client. Refresh tokens and the JWT access tokens issued from
-- it carry its id; revoking it ends them all.
CREATE TABLE grants (
    id          TEXT    NOT NULL PRIMARY KEY,
    org_id      TEXT    NOT NULL REFERENCES orgs (id),
    client_id   TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    user_id     TEXT    REFERENCES users (id) ON DELETE CASCADE,
    scopes      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX grants_client_user_idx ON grants (client_id, user_id);

-- Authorization codes, single use: `used_at` is set by the first exchange,
-- with the grant it created, so that a replay can revoke that grant.
CREATE TABLE auth_codes (
    digest          BYTEA   NOT NULL PRIMARY KEY,
    client_id       TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    org_id          TEXT    NOT NULL,
    user_id         TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    redirect_uri    TEXT    NOT NULL,
    scopes          TEXT    NOT NULL,
    code_challenge  TEXT,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT  NOT NULL,
    used_at         BIGINT,
    grant_id        TEXT
);

CREATE INDEX auth_codes_expires_idx ON auth_codes (expires_at);

-- Refresh tokens, rotated on every use: the one presented is spent
-- (`spent_at`) and a new one of the same grant issued. A spent one
-- presented again revokes the grant.
CREATE TABLE refresh_tokens (
    digest      BYTEA   NOT NULL PRIMARY KEY,
    grant_id    TEXT    NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    spent_at    BIGINT
);

CREATE INDEX refresh_tokens_grant_idx ON refresh_tokens (grant_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);

-- Opaque access tokens (`access_token_format = "opaque"`).
CREATE TABLE access_tokens (
    digest      BYTEA   NOT NULL PRIMARY KEY,
    jti         TEXT    NOT NULL,
    grant_id    TEXT    REFERENCES grants (id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    org_id      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    scopes      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX access_tokens_expires_idx ON access_tokens (expires_at);

-- JWT access tokens revoked one by one (RFC 7009), until they expire.
CREATE TABLE revoked_jtis (
    jti         TEXT    NOT NULL PRIMARY KEY,
    expires_at  BIGINT  NOT NULL
);

CREATE INDEX revoked_jtis_expires_idx ON revoked_jtis (expires_at);

-- Consent a user gave a client, remembered until revoked.
CREATE TABLE consents (
    user_id     TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id   TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scopes      TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE INDEX consents_client_idx ON consents (client_id);

-- The change feed (0002_changes.sql) for what nodes cache here. Records
-- keyed by id send `<table>:<id>`; opaque access tokens `<table>:<hex
-- digest>` as keys do; a new revoked jti `revoked_jtis:<jti>`; any change
-- to the signing keys `signing_keys:`.
CREATE FUNCTION latchkey_notify_id() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', TG_TABLE_NAME || ':' || OLD.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION latchkey_notify_new_jti() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', 'revoked_jtis:' || NEW.jti);
    RETURN NULL;
END
$$;

CREATE FUNCTION latchkey_notify_table() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('latchkey_changes', TG_TABLE_NAME || ':');
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_changed
AFTER UPDATE OR DELETE ON clients
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_id();

CREATE TRIGGER grants_changed
AFTER UPDATE OF revoked_at OR DELETE ON grants
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_id();

CREATE TRIGGER access_tokens_changed
AFTER UPDATE OF revoked_at OR DELETE ON access_tokens
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_change();

CREATE TRIGGER revoked_jtis_added
AFTER INSERT ON revoked_jtis
FOR EACH ROW EXECUTE FUNCTION latchkey_notify_new_jti();

CREATE TRIGGER signing_keys_changed
AFTER INSERT OR UPDATE OR DELETE ON signing_keys
FOR EACH STATEMENT EXECUTE FUNCTION latchkey_notify_table();
