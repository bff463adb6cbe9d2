#!/usr/bin/env bash
# The latchkey benchmark of protecting an API (issue 4), in one command
# (see docs/benchmarks.md, "Protecting an API"):
#
#   bench/protect.sh
#
# Builds release, then for each backend: a fresh database, a root key,
# `latchkey-bench upstream` (an HTTP server answering 200 {"ok":true} to
# everything) on a free port, and `latchkey serve` with
#   [proxy] upstream = <that upstream>
#   [[routes]] methods = ["GET"], path = "/api/v1/documents", scopes = ["documents.read"]
# 1,000 keys with scope documents.read seeded through the API, a warm-up,
# then interleaved rounds at -c32 and -c1 of
#   healthz, forward-auth, healthz, direct, proxy, direct
# where forward-auth is GET /v1/forward-auth for GET /api/v1/documents
# (goal: forward-auth / healthz >= 0.5), proxy is GET /api/v1/documents
# through latchkey and direct the same request straight to the upstream
# (goal: proxy / direct >= 0.5).
# Then revocation propagation: two `latchkey serve` nodes on one new
# PostgreSQL database (same config, same LATCHKEY_MASTER_KEY), and
# `latchkey-bench propagation`: 200 rounds of create through A, verify
# through B until valid, revoke through A, verify through B until
# KEY_REVOKED (goal: p99 <= 100 ms from A's revoke answer).
# Prints the tables; exits 1 if any run had a wrong answer or an error.
# (POST /v1/verify, with and without Redis: bench/run.sh.)
#
# Overrides: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_C1_SECONDS (3),
# BENCH_C1_ROUNDS (2), BENCH_HOT_KEYS (1000: keys seeded and used),
# BENCH_WARMUP (3), BENCH_CONNECTIONS (32), BENCH_BACKENDS ("sqlite
# postgres"; empty: no throughput pass), BENCH_PROPAGATION_ROUNDS (200; 0:
# no propagation pass), BENCH_PG_URL (postgres://postgres@127.0.0.1:5432),
# BENCH_SKIP_BUILD=1 (use the binaries already built).
# Only the propagation figure: BENCH_BACKENDS= bench/protect.sh
# Smoke run: BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_C1_SECONDS=1 BENCH_C1_ROUNDS=1 BENCH_WARMUP=1 BENCH_PROPAGATION_ROUNDS=20 bench/protect.sh
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"
# shellcheck source=bench/lib.sh
source "$ROOT_DIR/bench/lib.sh"

HOT=${BENCH_HOT_KEYS:-1000}
BACKENDS=${BENCH_BACKENDS-sqlite postgres}
PROP_ROUNDS=${BENCH_PROPAGATION_ROUNDS:-200}

bench_build

bench_work latchkey-protect

bench_header "BENCH_SECONDS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_C1_SECONDS=$C1_SECS BENCH_C1_ROUNDS=$C1_ROUNDS BENCH_HOT_KEYS=$HOT BENCH_CONNECTIONS=$CONNS BENCH_BACKENDS=\"$BACKENDS\" BENCH_PROPAGATION_ROUNDS=$PROP_ROUNDS bench/protect.sh" >"$WORK/header.md"
cat "$WORK/header.md" >&2

for backend in $BACKENDS; do
    dir=$WORK/$backend
    mkdir -p "$dir"
    if [[ $backend == *+redis ]]; then
        bench_check_redis
    fi
    bench_db "$backend" "$dir"
    bench_upstream upstream "$dir"
    upstream=$STARTED_URL
    bench_config "$backend" "$dir"
    cat >>"$dir/latchkey.toml" <<TOML

[proxy]
upstream = "$upstream"

[[routes]]
methods = ["GET"]
path = "/api/v1/documents"
scopes = ["documents.read"]
TOML
    bench_root_key "$dir/latchkey.toml"
    root=$ROOT_KEY

    bench_serve server "$dir"
    server_pid=$STARTED_PID
    url=$STARTED_URL
    echo "== $backend: server pid $server_pid at $url, upstream at $upstream" >&2

    LATCHKEY_ROOT_KEY=$root "$LB" seed --url "$url" --out "$dir" --keys "$HOT" --revoked 0 --malformed 0 \
        -c "$CONNS" --jsonl "$RESULTS" --backend "$backend"
    LATCHKEY_ROOT_KEY=$root "$LB" suite --plan protect --upstream "$upstream" \
        --url "$url" --dir "$dir" --backend "$backend" --server-pid "$server_pid" \
        --seconds "$SECS" --rounds "$ROUNDS" --c1-seconds "$C1_SECS" --c1-rounds "$C1_ROUNDS" \
        --warmup "$WARMUP" --hot-keys "$HOT" -c "$CONNS" --jsonl "$RESULTS"

    bench_stop
    bench_log_tail server "$dir"
    bench_log_tail upstream "$dir"
    rm -rf "$dir/data" "$dir"/*.txt
done

status=0
if ((PROP_ROUNDS > 0)); then
    dir=$WORK/propagation
    mkdir -p "$dir"
    bench_db postgres "$dir"
    bench_config postgres "$dir"
    bench_root_key "$dir/latchkey.toml"
    root=$ROOT_KEY
    # Two nodes started the same way, on the same database and master key.
    bench_serve node-a "$dir"
    url_a=$STARTED_URL
    bench_serve node-b "$dir"
    url_b=$STARTED_URL
    echo "== propagation: node A at $url_a, node B at $url_b (PostgreSQL)" >&2
    LATCHKEY_ROOT_KEY=$root "$LB" propagation --a "$url_a" --b "$url_b" --n "$PROP_ROUNDS" \
        --backend postgres --jsonl "$RESULTS" || status=$?
    bench_stop
    bench_log_tail node-a "$dir"
    bench_log_tail node-b "$dir"
fi

bench_report || status=$?
exit "$status"
