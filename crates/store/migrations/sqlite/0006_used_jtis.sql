-- JWT ids that may be used once (client assertions, client-signed JWTs
-- under `[jwt_auth] require_jti`), kept until the token expires. Unlike
-- revoked_jtis, nothing caches them and no change is published: each use
-- is one atomic insert, so that of two nodes seeing one token, one wins.
CREATE TABLE used_jtis (
    id          TEXT    NOT NULL PRIMARY KEY,
    expires_at  BIGINT  NOT NULL
);

CREATE INDEX used_jtis_expires_idx ON used_jtis (expires_at);
