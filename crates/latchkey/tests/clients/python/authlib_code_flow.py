"""latchkey's authorization code flow as a Python web app sees it: Authlib
builds the authorization URL (PKCE S256) and does the token work; the
script plays the user's browser with requests (a Session keeping cookies,
the forms' hidden fields read with the stdlib's html.parser), captures the
redirect without following it, then Authlib exchanges the code, refreshes
(rotation), introspects and revokes; joserfc verifies the access tokens
offline against the published JWKS.

Run by tests/oauth_flow.rs with, in the environment:

    LATCHKEY_ISSUER                          the server's public URL
    FLOW_CLIENT_ID / FLOW_CLIENT_SECRET      a client_secret_basic client
    FLOW_REDIRECT_URI                        its redirect URI
    FLOW_EMAIL / FLOW_PASSWORD               the user who signs in

It prints one JSON document of what it saw (never a secret or a token) and
exits non-zero when a library raised.
"""

import json
import os
import secrets
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc import jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

ISSUER = os.environ["LATCHKEY_ISSUER"]
CLIENT_ID = os.environ["FLOW_CLIENT_ID"]
REDIRECT_URI = os.environ["FLOW_REDIRECT_URI"]
SCOPE = "documents.read profile offline_access"
SIGNING_ALGS = ["EdDSA", "ES256", "RS256"]


class FormParser(HTMLParser):
    """The first form of a page: its action and its input fields."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}
        self.in_form = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
            self.in_form = True
        elif tag in ("input", "button") and self.in_form and a.get("name"):
            if tag == "input" and a.get("type") in ("hidden", None, "text", "email"):
                self.fields[a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False


def form_of(response):
    p = FormParser()
    p.feed(response.text)
    if p.action is None:
        raise ValueError(f"no form on the page ({response.status_code})")
    return urljoin(response.url, p.action), p.fields


def browse(url):
    """Signs in and allows, as a browser would; answers the redirect's URL."""
    browser = requests.Session()
    r = browser.get(url, allow_redirects=False, timeout=10)
    r.raise_for_status()
    action, fields = form_of(r)
    fields["email"] = os.environ["FLOW_EMAIL"]
    fields["password"] = os.environ["FLOW_PASSWORD"]
    r = browser.post(action, data=fields, allow_redirects=False, timeout=10)
    if r.status_code == 200:  # the consent page
        action, fields = form_of(r)
        fields["decision"] = "allow"
        r = browser.post(action, data=fields, allow_redirects=False, timeout=10)
    if r.status_code != 303:
        raise ValueError(f"expected a redirect, got {r.status_code}")
    location = r.headers["Location"]
    if not location.startswith(REDIRECT_URI + "?"):
        raise ValueError("the redirect is not to the client's redirect URI")
    return location


def verify_offline(access_token, jwks):
    token = jwt.decode(access_token, jwks, algorithms=SIGNING_ALGS)
    JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": ISSUER},
        sub={"essential": True},
        client_id={"essential": True, "value": CLIENT_ID},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(token.claims)
    c = token.claims
    return {
        "alg": token.header["alg"],
        "typ": token.header.get("typ"),
        **{k: c.get(k) for k in ("iss", "aud", "sub", "client_id", "scope", "org_id", "gid")},
    }


def main():
    r = requests.get(ISSUER + "/.well-known/oauth-authorization-server", timeout=10)
    r.raise_for_status()
    meta = AuthorizationServerMetadata(r.json())
    meta.validate()
    r = requests.get(meta["jwks_uri"], timeout=10)
    r.raise_for_status()
    jwks = KeySet.import_key_set(r.json())

    session = OAuth2Session(
        CLIENT_ID,
        os.environ["FLOW_CLIENT_SECRET"],
        scope=SCOPE,
        redirect_uri=REDIRECT_URI,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic",
        revocation_endpoint_auth_method="client_secret_basic",
    )
    verifier = generate_token(64)
    state = secrets.token_urlsafe(16)
    url, state = session.create_authorization_url(
        meta["authorization_endpoint"], state=state, code_verifier=verifier
    )
    location = browse(url)
    query = parse_qs(urlparse(location).query)
    out = {
        "state_matches": query.get("state") == [state],
        "iss": (query.get("iss") or [None])[0],
    }
    if not out["state_matches"] or out["iss"] != meta["issuer"]:
        raise ValueError("state or iss of the authorization response is wrong")

    token = session.fetch_token(
        meta["token_endpoint"], authorization_response=location, state=state, code_verifier=verifier
    )
    out["token"] = {
        "token_type": token.get("token_type"),
        "expires_in": token.get("expires_in"),
        "scope": token.get("scope"),
        "has_refresh_token": bool(token.get("refresh_token")),
    }
    out["claims"] = verify_offline(token["access_token"], jwks)

    first_refresh = token["refresh_token"]
    refreshed = session.refresh_token(meta["token_endpoint"], refresh_token=first_refresh)
    out["refresh_rotated"] = bool(refreshed.get("refresh_token")) and refreshed["refresh_token"] != first_refresh
    out["refreshed_claims"] = verify_offline(refreshed["access_token"], jwks)

    r = session.introspect_token(
        meta["introspection_endpoint"], token=refreshed["access_token"], token_type_hint="access_token"
    )
    r.raise_for_status()
    i = r.json()
    out["introspection"] = {k: i.get(k) for k in ("active", "client_id", "sub", "scope", "iss", "aud")}

    r = session.revoke_token(
        meta["revocation_endpoint"], token=refreshed["refresh_token"], token_type_hint="refresh_token"
    )
    r.raise_for_status()
    r = session.introspect_token(meta["introspection_endpoint"], token=refreshed["refresh_token"])
    r.raise_for_status()
    out["after_revoke"] = r.json()
    # Revoking the refresh token revoked its grant: the access token too.
    r = session.introspect_token(meta["introspection_endpoint"], token=refreshed["access_token"])
    r.raise_for_status()
    out["access_after_revoke"] = r.json()
    print(json.dumps(out))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the Rust test shows this and fails
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        raise
