#!/usr/bin/env bash
# The latchkey benchmark of the OAuth server (issue 5), in one command
# (see docs/benchmarks.md, "OAuth token and introspection"):
#
#   bench/oauth.sh
#
# Builds release, copies the peer, node-oidc-provider (shared/peers/
# oidc-provider: one confidential client, opaque tokens, in-memory store),
# into a temp dir, installs it there (`npm ci`), starts it on a free port
# with NODE_ENV=production. Then for each backend: a fresh database, a root
# key, `latchkey serve`, an organization and an OAuth client with scope
# api:read (through the API), one token and one introspection from each
# server by curl (to fail early), a warm-up, then interleaved rounds at
# -c32 and -c1 of
#   healthz, token, peer-token, healthz, introspect, peer-introspect
# where token is POST /oauth/token (client_credentials, client_secret_basic)
# and introspect POST /oauth/introspect of a token fetched just before the
# run; peer-token and peer-introspect the same requests to the peer
# (POST /token, POST /token/introspection). Goals: tokens/s and
# introspections/s of latchkey ≥ 10× the peer's; when 10× the peer would
# be above latchkey's own /healthz, the ratio to /healthz is reported too.
# Prints the tables; exits 1 if any run had a wrong answer or an error.
#
# Overrides: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_C1_SECONDS (3),
# BENCH_C1_ROUNDS (2), BENCH_WARMUP (3), BENCH_CONNECTIONS (32),
# BENCH_BACKENDS ("sqlite postgres"), BENCH_PEER_DIR (the peer's folder,
# only read: ../shared/peers/oidc-provider from the repository),
# BENCH_PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_BUILD=1
# (use the binaries already built).
# Smoke run: BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_C1_SECONDS=1 BENCH_C1_ROUNDS=1 BENCH_WARMUP=1 BENCH_BACKENDS=sqlite bench/oauth.sh
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"
# shellcheck source=bench/lib.sh
source "$ROOT_DIR/bench/lib.sh"

BACKENDS=${BENCH_BACKENDS-sqlite postgres}
PEER_SRC=${BENCH_PEER_DIR:-$ROOT_DIR/../shared/peers/oidc-provider}
SCOPE=api:read

# The peer's client (shared/peers/oidc-provider/server.mjs).
export LATCHKEY_BENCH_PEER_CLIENT_ID=bench-client
export LATCHKEY_BENCH_PEER_CLIENT_SECRET=bench-secret-0123456789abcdef0123456789abcdef

for tool in node npm curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool not found: the peer needs Node.js and npm, the setup curl" >&2
        exit 1
    fi
done
if [[ ! -f $PEER_SRC/server.mjs || ! -f $PEER_SRC/package-lock.json ]]; then
    echo "no peer at $PEER_SRC (server.mjs, package-lock.json): set BENCH_PEER_DIR" >&2
    exit 1
fi

bench_build

bench_work latchkey-oauth

# The peer runs through every backend's pass: it is stopped on exit, not
# by bench_stop.
PEER_PID=""
peer_stop() {
    if [[ -n $PEER_PID ]]; then
        kill "$PEER_PID" 2>/dev/null || true
        wait "$PEER_PID" 2>/dev/null || true
        PEER_PID=""
    fi
}
trap 'bench_stop; peer_stop' EXIT

# A copy of the peer's folder: installing never touches the shared one.
peer_dir=$WORK/peer
mkdir -p "$peer_dir"
cp -R "$PEER_SRC/." "$peer_dir/"
rm -rf "$peer_dir/node_modules"
echo "installing the peer (npm ci in $peer_dir)..." >&2
if ! npm ci --prefix "$peer_dir" --no-audit --no-fund >"$WORK/npm.log" 2>&1; then
    echo "npm ci failed:" >&2
    tail -n 20 "$WORK/npm.log" >&2
    exit 1
fi
NODE_VERSION=$(node --version)
PEER_VERSION=$(node -p "require('$peer_dir/node_modules/oidc-provider/package.json').version")
peer_port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
# server.mjs says where it listens on stderr: merged into the stdout that
# bench_start reads. `exec` keeps the PID node's, for its CPU figures.
bench_start peer "$WORK" 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' \
    env PORT="$peer_port" NODE_ENV=production bash -c 'exec node "$0" 2>&1' "$peer_dir/server.mjs"
PEER_PID=$STARTED_PID
PEER_URL=$STARTED_URL
BENCH_PIDS=()

peer_note=""
if grep -q 'Unsupported runtime' "$WORK/peer.out"; then
    peer_note="; oidc-provider warns that this Node is an unsupported runtime"
fi
{
    # bench_header ends with a blank line: the peer's line goes before it.
    bench_header "BENCH_SECONDS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_C1_SECONDS=$C1_SECS BENCH_C1_ROUNDS=$C1_ROUNDS BENCH_WARMUP=$WARMUP BENCH_CONNECTIONS=$CONNS BENCH_BACKENDS=\"$BACKENDS\" bench/oauth.sh" | sed '$d'
    echo "- peer: node-oidc-provider $PEER_VERSION on Node $NODE_VERSION (NODE_ENV=production, one process; opaque access tokens, in-memory store)$peer_note"
    echo
} >"$WORK/header.md"
cat "$WORK/header.md" >&2
echo "== peer: pid $PEER_PID at $PEER_URL" >&2

# post URL PATH BODY CONTENT_TYPE: POST with the Authorization header read
# from stdin (no secret in any process's arguments); prints the answer if
# it is a 2xx, else says what it was on stderr and fails.
post() {
    local out
    if ! out=$(curl -sS --fail-with-body -X POST "$1$2" -H @- -H "Content-Type: $4" --data-binary "$3"); then
        echo "POST $1$2: $out" >&2
        return 1
    fi
    printf '%s\n' "$out"
}

# json_field NAME: the top-level string field NAME of the JSON object on
# stdin (empty if there is none).
json_field() {
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
        let v; try { v = JSON.parse(s)[process.argv[1]]; } catch {}
        console.log(typeof v === "string" ? v : "");
    });' "$1"
}

# check_oauth NAME URL TOKEN_PATH INTROSPECT_PATH BASIC: one token and its
# introspection, by curl.
check_oauth() {
    local token answer
    token=$(echo "Authorization: Basic $5" |
        post "$2" "$3" "grant_type=client_credentials&scope=api%3Aread" application/x-www-form-urlencoded |
        json_field access_token) || true
    if [[ -z $token ]]; then
        echo "$1: no token from POST $3" >&2
        exit 1
    fi
    answer=$(echo "Authorization: Basic $5" |
        post "$2" "$4" "token=$token" application/x-www-form-urlencoded) || true
    if [[ $answer != *'"active":true'* ]]; then
        echo "$1: POST $4 of a fresh token: $answer" >&2
        exit 1
    fi
}

peer_basic=$(printf '%s:%s' "$LATCHKEY_BENCH_PEER_CLIENT_ID" "$LATCHKEY_BENCH_PEER_CLIENT_SECRET" | base64 -w0)
check_oauth peer "$PEER_URL" /token /token/introspection "$peer_basic"

for backend in $BACKENDS; do
    dir=$WORK/$backend
    mkdir -p "$dir"
    bench_db "$backend" "$dir"
    bench_config "$backend" "$dir"
    bench_root_key "$dir/latchkey.toml"
    root=$ROOT_KEY

    bench_serve server "$dir"
    server_pid=$STARTED_PID
    url=$STARTED_URL
    echo "== $backend: server pid $server_pid at $url" >&2

    org=$(echo "Authorization: Bearer $root" |
        post "$url" /v1/orgs '{"name":"bench"}' application/json | json_field id)
    if [[ -z $org ]]; then
        echo "$backend: could not create an organization" >&2
        exit 1
    fi
    client=$(echo "Authorization: Bearer $root" |
        post "$url" "/v1/orgs/$org/clients" "{\"name\":\"bench\",\"scopes\":[\"$SCOPE\"]}" application/json)
    LATCHKEY_BENCH_CLIENT_ID=$(json_field client_id <<<"$client")
    LATCHKEY_BENCH_CLIENT_SECRET=$(json_field client_secret <<<"$client")
    export LATCHKEY_BENCH_CLIENT_ID LATCHKEY_BENCH_CLIENT_SECRET
    if [[ -z $LATCHKEY_BENCH_CLIENT_ID || -z $LATCHKEY_BENCH_CLIENT_SECRET ]]; then
        echo "$backend: could not register an OAuth client" >&2
        exit 1
    fi
    basic=$(printf '%s:%s' "$LATCHKEY_BENCH_CLIENT_ID" "$LATCHKEY_BENCH_CLIENT_SECRET" | base64 -w0)
    check_oauth latchkey "$url" /oauth/token /oauth/introspect "$basic"

    LATCHKEY_ROOT_KEY=$root "$LB" suite --plan oauth --peer "$PEER_URL" --peer-pid "$PEER_PID" \
        --scope "$SCOPE" --url "$url" --backend "$backend" --server-pid "$server_pid" \
        --seconds "$SECS" --rounds "$ROUNDS" --c1-seconds "$C1_SECS" --c1-rounds "$C1_ROUNDS" \
        --warmup "$WARMUP" -c "$CONNS" --jsonl "$RESULTS"

    bench_stop
    bench_log_tail server "$dir"
    rm -rf "$dir/data"
done
peer_stop

status=0
bench_report || status=$?
echo "peer log: $WORK/peer.out" >&2
exit "$status"
