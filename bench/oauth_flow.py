#!/usr/bin/env python3
"""Time per full authorization-code + PKCE flow (issue 5), against a running
latchkey: GET /oauth/authorize, POST the sign-in form, POST the consent form
(`prompt=consent`, so it is shown every time), POST /oauth/token. One client
(Python requests, sequential), N flows after 3 warm-up ones; every answer is
checked (a wrong one stops the run). Prints a JSON line and a table row.

    LATCHKEY_ROOT_KEY=lk_root_... python3 bench/oauth_flow.py --url http://127.0.0.1:8080 [--n 40]

Makes its own organization, users (one per flow: sign-in is rate-limited
per account) and client through the management API.
The sign-in step runs argon2id (m=19 MiB, t=2): by design the most costly
part of a flow.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import statistics
import sys
import time
import urllib.parse

import requests

REDIRECT = "https://app.example.com/callback"


def field(html, name):
    m = re.search(r'name="%s" value="([^"]*)"' % re.escape(name), html)
    if not m:
        sys.exit(f"no {name} field in the page: {html[:300]}")
    return m.group(1)


def flow(url, client_id, secret, email, password):
    s = requests.Session()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(16)
    t0 = time.perf_counter()
    r = s.get(f"{url}/oauth/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
        "scope": "documents.read", "state": state, "code_challenge": challenge,
        "code_challenge_method": "S256", "prompt": "consent",
    }, allow_redirects=False)
    assert r.status_code == 200, r.text[:300]
    t1 = time.perf_counter()
    r = s.post(f"{url}/oauth/authorize/login", data={
        "flow": field(r.text, "flow"), "email": email, "password": password,
    }, allow_redirects=False)
    assert r.status_code == 200, r.text[:300]
    t2 = time.perf_counter()
    assert 'name="decision" value="allow"' in r.text, r.text[:300]
    form = {"flow": field(r.text, "flow"), "decision": "allow"}
    r = s.post(f"{url}/oauth/authorize/consent", data=form, allow_redirects=False)
    assert r.status_code in (302, 303), r.text[:300]
    q = urllib.parse.parse_qs(urllib.parse.urlparse(r.headers["location"]).query)
    assert q["state"] == [state], q
    t3 = time.perf_counter()
    r = requests.post(f"{url}/oauth/token", auth=(client_id, secret), data={
        "grant_type": "authorization_code", "code": q["code"][0],
        "redirect_uri": REDIRECT, "code_verifier": verifier,
    })
    assert r.status_code == 200 and "access_token" in r.json(), r.text[:300]
    t4 = time.perf_counter()
    steps = {"authorize": t1 - t0, "login": t2 - t1, "consent": t3 - t2, "token": t4 - t3}
    return t4 - t0, steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--backend", default="?")
    a = ap.parse_args()
    root = {"Authorization": f"Bearer {os.environ['LATCHKEY_ROOT_KEY']}"}
    org = requests.post(f"{a.url}/v1/orgs", json={"name": "flow bench"}, headers=root).json()["id"]
    password = secrets.token_urlsafe(16)
    # Sign-in is limited to 10 per account and 50 per address per 5 min:
    # one account per flow, and at most 47 flows a run.
    if a.n + 3 > 50:
        sys.exit("--n: at most 47 (sign-ins are limited to 50 per address per 5 minutes)")
    emails = [f"bench{i}@example.com" for i in range(a.n + 3)]
    for email in emails:
        r = requests.post(f"{a.url}/v1/orgs/{org}/users", json={"email": email, "password": password}, headers=root)
        assert r.status_code == 201, r.text
    r = requests.post(f"{a.url}/v1/orgs/{org}/clients", json={
        "name": "flow bench", "redirect_uris": [REDIRECT], "scopes": ["documents.read"],
    }, headers=root)
    assert r.status_code == 201, r.text
    c = r.json()
    for email in emails[:3]:
        flow(a.url, c["client_id"], c["client_secret"], email, password)
    totals, parts = [], {"authorize": [], "login": [], "consent": [], "token": []}
    for email in emails[3:]:
        total, steps = flow(a.url, c["client_id"], c["client_secret"], email, password)
        totals.append(total)
        for k, v in steps.items():
            parts[k].append(v)
    totals.sort()
    ms = lambda v: round(v * 1000, 2)
    out = {
        "backend": a.backend, "flows": a.n,
        "p50_ms": ms(statistics.median(totals)),
        "p99_ms": ms(totals[min(len(totals) - 1, int(0.99 * len(totals)))]),
        "mean_ms": ms(statistics.mean(totals)),
        "steps_p50_ms": {k: ms(statistics.median(v)) for k, v in parts.items()},
    }
    print(json.dumps(out))
    print(f"| {a.backend} | {a.n} | {out['p50_ms']} ms | {out['p99_ms']} ms | "
          + " · ".join(f"{k} {v} ms" for k, v in out["steps_p50_ms"].items()) + " |")


if __name__ == "__main__":
    main()
