#!/usr/bin/env bash
# The latchkey benchmark of client-signed JWTs (issue 6), in one command
# (see docs/benchmarks.md, "Client-signed JWTs"):
#
#   bench/jwt.sh
#
# Builds release, then for each backend: a fresh database, a root key,
# `latchkey serve` with [jwt_auth] audience set, three clients registered
# through the API (HS256 with its secret; EdDSA and ES256 with keys made
# by latchkey-bench and registered as JWKs) and 1,000 distinct tokens
# signed for each (reused: as a client keeps its token until it expires)
# and 1,200,000 more each (sent once: a signature the server never saw), a
# warm-up, then interleaved rounds at -c32 and -c1 of
#   healthz, jwt-hs256, jwt-eddsa, healthz, jwt-es256,
#   healthz, jwt-hs256-fresh, jwt-eddsa-fresh, healthz, jwt-es256-fresh, healthz
# where each jwt-* run is POST /v1/verify of tokens drawn at random from
# that algorithm's 1,000, and each jwt-*-fresh run of tokens taken in
# order, each once (goals: HS256 / healthz >= 0.4, EdDSA and ES256 /
# healthz >= 0.25). Every answer must be valid: true.
# Prints the tables; exits 1 if any run had a wrong answer or an error.
#
# Overrides: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_C1_SECONDS (3),
# BENCH_C1_ROUNDS (2), BENCH_TOKENS (1000), BENCH_FRESH_TOKENS (1200000;
# 0: no fresh runs; more runs need more), BENCH_WARMUP (3),
# BENCH_CONNECTIONS (32), BENCH_BACKENDS ("sqlite postgres"),
# BENCH_PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_BUILD=1.
# Smoke run: BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_C1_SECONDS=1 BENCH_C1_ROUNDS=1 BENCH_WARMUP=1 BENCH_FRESH_TOKENS=100000 BENCH_BACKENDS=sqlite bench/jwt.sh
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"
# shellcheck source=bench/lib.sh
source "$ROOT_DIR/bench/lib.sh"

TOKENS=${BENCH_TOKENS:-1000}
FRESH=${BENCH_FRESH_TOKENS:-1200000}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
AUDIENCE=https://api.bench.test

bench_build

bench_work latchkey-jwt

bench_header "BENCH_SECONDS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_C1_SECONDS=$C1_SECS BENCH_C1_ROUNDS=$C1_ROUNDS BENCH_TOKENS=$TOKENS BENCH_FRESH_TOKENS=$FRESH BENCH_CONNECTIONS=$CONNS BENCH_BACKENDS=\"$BACKENDS\" bench/jwt.sh" >"$WORK/header.md"
cat "$WORK/header.md" >&2

for backend in $BACKENDS; do
    dir=$WORK/$backend
    mkdir -p "$dir"
    bench_db "$backend" "$dir"
    bench_config "$backend" "$dir"
    cat >>"$dir/latchkey.toml" <<TOML

[jwt_auth]
audience = "$AUDIENCE"
max_lifetime = "1h"
TOML
    bench_root_key "$dir/latchkey.toml"
    root=$ROOT_KEY

    bench_serve server "$dir"
    server_pid=$STARTED_PID
    url=$STARTED_URL
    echo "== $backend: server pid $server_pid at $url" >&2

    LATCHKEY_ROOT_KEY=$root "$LB" seed-jwts --url "$url" --out "$dir" --tokens "$TOKENS" --fresh "$FRESH" \
        --audience "$AUDIENCE" --lifetime 3600
    LATCHKEY_ROOT_KEY=$root "$LB" suite --plan jwt \
        --url "$url" --dir "$dir" --backend "$backend" --server-pid "$server_pid" \
        --seconds "$SECS" --rounds "$ROUNDS" --c1-seconds "$C1_SECS" --c1-rounds "$C1_ROUNDS" \
        --warmup "$WARMUP" -c "$CONNS" --jsonl "$RESULTS"

    bench_stop
    bench_log_tail server "$dir"
    rm -rf "$dir/data" "$dir"/*.txt
done

status=0
bench_report || status=$?
exit "$status"
