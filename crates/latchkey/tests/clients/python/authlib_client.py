"""latchkey's OAuth endpoints as a Python client sees them: Authlib's
requests client does the talking, joserfc (an independent JOSE library)
verifies the access tokens offline against the published JWKS.

Run by tests/oauth_token.rs with the server and the clients it registered
in the environment:

    LATCHKEY_ISSUER        the server's public URL (its issuer)
    BASIC_CLIENT_ID / BASIC_CLIENT_SECRET    a client_secret_basic client
    POST_CLIENT_ID / POST_CLIENT_SECRET      a client_secret_post client
    PKJWT_CLIENT_ID / PKJWT_KID / PKJWT_PRIVATE_KEY_PEM
                                             a private_key_jwt client (EC P-256)

It prints one JSON document of what it saw (never a secret or a token) and
exits non-zero when a library raised.
"""

import json
import os
import sys
import time

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT, private_key_jwt_sign
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from joserfc.jwt import JWTClaimsRegistry

ISSUER = os.environ["LATCHKEY_ISSUER"]
SIGNING_ALGS = ["EdDSA", "ES256", "RS256"]


def metadata():
    """RFC 8414 discovery, checked by Authlib's own metadata model."""
    r = requests.get(ISSUER + "/.well-known/oauth-authorization-server", timeout=10)
    r.raise_for_status()
    meta = AuthorizationServerMetadata(r.json())
    meta.validate()
    return meta


def verify_offline(access_token, jwks, client_id):
    """Verifies an RFC 9068 access token with joserfc alone."""
    token = jwt.decode(access_token, jwks, algorithms=SIGNING_ALGS)
    claims = JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": ISSUER},
        sub={"essential": True, "value": client_id},
        client_id={"essential": True, "value": client_id},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    )
    claims.validate(token.claims)  # also checks exp/iat against the clock
    if token.header.get("typ") != "at+jwt":
        raise ValueError(f"typ is {token.header.get('typ')!r}, not at+jwt")
    c = token.claims
    return {
        "alg": token.header["alg"],
        "typ": token.header["typ"],
        "kid_published": any(k.kid == token.header.get("kid") for k in jwks.keys),
        "iss": c["iss"],
        "aud": c["aud"],
        "sub": c["sub"],
        "client_id": c["client_id"],
        "scope": c["scope"],
        "org_id": c.get("org_id"),
        "lifetime": c["exp"] - c["iat"],
    }


def token_fields(token):
    """A token response without the token itself."""
    return {k: v for k, v in token.items() if k not in ("access_token", "expires_at")}


def run(meta, jwks, session, client_id):
    """client_credentials, offline verification, introspection, revocation."""
    token = session.fetch_token(
        meta["token_endpoint"], grant_type="client_credentials", scope="documents.read"
    )
    claims = verify_offline(token["access_token"], jwks, client_id)
    r = session.introspect_token(
        meta["introspection_endpoint"],
        token=token["access_token"],
        token_type_hint="access_token",
    )
    r.raise_for_status()
    before = r.json()
    r = session.revoke_token(
        meta["revocation_endpoint"],
        token=token["access_token"],
        token_type_hint="access_token",
    )
    revoke_status = r.status_code
    r = session.introspect_token(meta["introspection_endpoint"], token=token["access_token"])
    r.raise_for_status()
    after = r.json()
    return {
        "token": token_fields(token),
        "claims": claims,
        "introspection": {
            k: before.get(k) for k in ("active", "client_id", "sub", "scope", "token_type", "iss", "aud")
        },
        "introspection_jti_matches": before.get("jti") is not None
        and before.get("jti") == jwt.decode(token["access_token"], jwks, algorithms=SIGNING_ALGS).claims["jti"],
        "revoke_status": revoke_status,
        "after_revoke": after,
    }


def main():
    meta = metadata()
    r = requests.get(meta["jwks_uri"], timeout=10)
    r.raise_for_status()
    jwks = KeySet.import_key_set(r.json())
    out = {"metadata_issuer": meta["issuer"]}

    basic_id = os.environ["BASIC_CLIENT_ID"]
    basic = OAuth2Session(
        basic_id,
        os.environ["BASIC_CLIENT_SECRET"],
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
    )
    out["basic"] = run(meta, jwks, basic, basic_id)

    post_id = os.environ["POST_CLIENT_ID"]
    post = OAuth2Session(
        post_id,
        os.environ["POST_CLIENT_SECRET"],
        token_endpoint_auth_method="client_secret_post",
        revocation_endpoint_auth_method="client_secret_post",
    )
    out["post"] = run(meta, jwks, post, post_id)

    # A wrong secret: Authlib reads latchkey's RFC 6749 error.
    wrong = OAuth2Session(basic_id, "lk_cs_wrong", token_endpoint_auth_method="client_secret_basic")
    try:
        wrong.fetch_token(meta["token_endpoint"], grant_type="client_credentials")
        out["wrong_secret_error"] = None
    except OAuthError as e:
        out["wrong_secret_error"] = e.error

    # private_key_jwt (RFC 7523) with Authlib's own assertion signer.
    pk_id = os.environ["PKJWT_CLIENT_ID"]
    key = ECKey.import_key(os.environ["PKJWT_PRIVATE_KEY_PEM"], {"kid": os.environ["PKJWT_KID"]})
    endpoint = meta["token_endpoint"]

    def pk_session(auth_class):
        s = OAuth2Session(
            pk_id,
            key,
            token_endpoint_auth_method="private_key_jwt",
            revocation_endpoint_auth_method="private_key_jwt",
        )
        s.register_client_auth_method(auth_class(endpoint, headers={"kid": key.kid}, alg="ES256"))
        return s

    # Authlib's own PrivateKeyJWT, unmodified (its assertions last an hour).
    out["pkjwt"] = run(meta, jwks, pk_session(PrivateKeyJWT), pk_id)

    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the Rust test shows this and fails
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        raise
