#!/usr/bin/env bash
# The console benchmark (issue 7), in one command (see docs/benchmarks.md):
#
#   bench/console.sh
#
# Builds release, then for each backend: a fresh database, `latchkey
# serve`, an organization with 10,000 keys (through the API), 20 apps and
# 20 members, 1,000,000 usage log entries over the last 29 days (written
# through the store, as the server's log writer writes them), a console
# session of a root key (through the sign-in form); then each console
# page at one connection, GET /healthz between every three pages, in
# interleaved rounds. The report gives each page's p50 and p99 and their
# ratio to /healthz's on the same server. Exits 1 if any answer was wrong
# (every page is checked: 200, whole, signed in).
#
# Overrides: BENCH_SECONDS (3), BENCH_ROUNDS (3), BENCH_WARMUP (1),
# BENCH_KEYS (10000), BENCH_LOG_ROWS (1000000), BENCH_LOG_DAYS (29),
# BENCH_BACKENDS ("sqlite postgres"), BENCH_PG_URL, BENCH_SKIP_BUILD=1.
# Smoke run: BENCH_SECONDS=0.5 BENCH_ROUNDS=1 BENCH_WARMUP=0.2 BENCH_KEYS=500 BENCH_LOG_ROWS=20000 bench/console.sh
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"
# shellcheck source=bench/lib.sh
source "$ROOT_DIR/bench/lib.sh"

SECS=${BENCH_SECONDS:-3}
ROUNDS=${BENCH_ROUNDS:-3}
WARMUP=${BENCH_WARMUP:-1}
KEYS=${BENCH_KEYS:-10000}
ROWS=${BENCH_LOG_ROWS:-1000000}
DAYS=${BENCH_LOG_DAYS:-29}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}

bench_build

bench_work latchkey-console

bench_header "BENCH_SECONDS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_KEYS=$KEYS BENCH_LOG_ROWS=$ROWS BENCH_LOG_DAYS=$DAYS BENCH_BACKENDS=\"$BACKENDS\" bench/console.sh" >"$WORK/header.md"
cat "$WORK/header.md" >&2

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

    LATCHKEY_ROOT_KEY=$root "$LB" seed --url "$url" --out "$dir" --keys "$KEYS" --revoked 0 --malformed 0 \
        -c 8 --jsonl "$RESULTS" --backend "$backend"
    LATCHKEY_ROOT_KEY=$root "$LB" console-seed --url "$url" --out "$dir" --database "$DB_URL" \
        --rows "$ROWS" --days "$DAYS"
    LATCHKEY_ROOT_KEY=$root "$LB" suite --plan console --url "$url" --dir "$dir" --backend "$backend" \
        --server-pid "$server_pid" --seconds "$SECS" --rounds "$ROUNDS" --c1-rounds 0 \
        --warmup "$WARMUP" -c 1 --jsonl "$RESULTS"

    bench_stop
    bench_log_tail server "$dir"
    rm -rf "$dir/data" "$dir"/*.txt
done

status=0
bench_report || status=$?
exit "$status"
