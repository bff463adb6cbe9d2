#!/usr/bin/env bash
# The latchkey benchmark, in one command (see docs/benchmarks.md):
#
#   bench/run.sh
#
# Builds release, then for each backend: a fresh database (SQLite in a temp
# dir; PostgreSQL: a new database on $BENCH_PG_URL, dropped afterwards), a
# root key, `latchkey serve` on a free port, 100,000 keys seeded through the
# API, a warm-up, then interleaved rounds at -c32 and -c1 by latchkey-bench.
# Prints the tables; exits 1 if any run had a wrong answer or an error.
#
# Overrides: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_C1_SECONDS (3),
# BENCH_C1_ROUNDS (2), BENCH_KEYS (100000), BENCH_HOT_KEYS (1000),
# BENCH_WARMUP (3), BENCH_CONNECTIONS (32), BENCH_BACKENDS ("sqlite postgres"),
# BENCH_PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_SKIP_BUILD=1 (use the
# binaries already in target/release).
# Smoke run: BENCH_SECONDS=1 BENCH_ROUNDS=1 BENCH_C1_SECONDS=1 BENCH_C1_ROUNDS=1 BENCH_KEYS=2000 bench/run.sh
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT_DIR"

SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
C1_SECS=${BENCH_C1_SECONDS:-3}
C1_ROUNDS=${BENCH_C1_ROUNDS:-2}
KEYS=${BENCH_KEYS:-100000}
HOT=${BENCH_HOT_KEYS:-1000}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNECTIONS:-32}
BACKENDS=${BENCH_BACKENDS:-sqlite postgres}
PG=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
REVOKED=100

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building release (latchkey, latchkey-bench)..." >&2
    cargo build --release --quiet -p latchkey -p latchkey-bench
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
LK=$TARGET_DIR/release/latchkey
LB=$TARGET_DIR/release/latchkey-bench

WORK=$(mktemp -d "${TMPDIR:-/tmp}/latchkey-bench.XXXXXX")
RESULTS=$WORK/results.jsonl
SERVER_PID=""
PG_DB=""

cleanup() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
    if [[ -n $PG_DB ]]; then
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
        PG_DB=""
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    echo "## latchkey benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`BENCH_SECONDS=$SECS BENCH_ROUNDS=$ROUNDS BENCH_C1_SECONDS=$C1_SECS BENCH_C1_ROUNDS=$C1_ROUNDS BENCH_KEYS=$KEYS BENCH_HOT_KEYS=$HOT BENCH_CONNECTIONS=$CONNS BENCH_BACKENDS=\"$BACKENDS\" bench/run.sh\`"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "- server and load generator (1 thread) share the machine's cores, on loopback"
    echo
} >"$WORK/header.md"
cat "$WORK/header.md" >&2

for backend in $BACKENDS; do
    dir=$WORK/$backend
    mkdir -p "$dir"
    unset LATCHKEY_MASTER_KEY
    case $backend in
        sqlite)
            db_url="sqlite://$dir/data/latchkey.db"
            ;;
        postgres)
            PG_DB=latchkey_bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
            psql "$PG/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null
            # The database is on loopback: TLS would cost CPU on both sides and
            # protect nothing. BENCH_PG_SSLMODE=prefer measures it anyway.
            db_url="$PG/$PG_DB?sslmode=${BENCH_PG_SSLMODE:-disable}"
            LATCHKEY_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
            export LATCHKEY_MASTER_KEY
            ;;
        *)
            echo "unknown backend '$backend' (sqlite or postgres)" >&2
            exit 2
            ;;
    esac
    cat >"$dir/latchkey.toml" <<TOML
listen = "127.0.0.1:0"
database_url = "$db_url"
data_dir = "$dir/data"
TOML
    export LATCHKEY_LOG=warn

    root=$("$LK" --config "$dir/latchkey.toml" --json root-keys create --name bench |
        sed -n 's/^ *"key": *"\([^"]*\)".*/\1/p' | head -n 1)
    if [[ -z $root ]]; then
        echo "$backend: could not create a root key" >&2
        exit 1
    fi

    "$LK" --config "$dir/latchkey.toml" serve >"$dir/server.out" 2>"$dir/server.log" &
    SERVER_PID=$!
    url=""
    for _ in $(seq 1 300); do
        url=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$dir/server.out" | head -n 1)
        [[ -n $url ]] && break
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "$backend: the server exited:" >&2
            cat "$dir/server.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z $url ]]; then
        echo "$backend: the server did not say where it listens" >&2
        exit 1
    fi
    echo "== $backend: server pid $SERVER_PID at $url" >&2

    LATCHKEY_ROOT_KEY=$root "$LB" seed --url "$url" --out "$dir" --keys "$KEYS" --revoked "$REVOKED" \
        -c "$CONNS" --jsonl "$RESULTS" --backend "$backend"
    LATCHKEY_ROOT_KEY=$root "$LB" suite --url "$url" --dir "$dir" --backend "$backend" --server-pid "$SERVER_PID" \
        --seconds "$SECS" --rounds "$ROUNDS" --c1-seconds "$C1_SECS" --c1-rounds "$C1_ROUNDS" \
        --warmup "$WARMUP" --hot-keys "$HOT" -c "$CONNS" --jsonl "$RESULTS"

    cleanup
    if [[ -s $dir/server.log ]]; then
        echo "$backend: server log ($dir/server.log), last lines:" >&2
        tail -n 5 "$dir/server.log" >&2
    fi
    rm -rf "$dir/data" "$dir"/*.txt
done

status=0
"$LB" report "$RESULTS" >"$WORK/report.body.md" || status=$?
cat "$WORK/header.md" "$WORK/report.body.md" >"$WORK/report.md"
echo
cat "$WORK/report.md"
echo
echo "results: $RESULTS, report: $WORK/report.md" >&2
exit "$status"
