# Helpers shared by the bench/*.sh scripts: sourced, not run.
# The sourcing script sets ROOT_DIR and `set -euo pipefail` first.
#
# Every process started here is remembered by its PID and stopped by that
# PID (bench_stop, also on exit); a PostgreSQL database created here is
# dropped the same way.

PG=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}

# The schedule every script takes from the environment (its header lists
# the defaults): seconds and rounds at -c CONNS and at -c1, the warm-up.
SECS=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
C1_SECS=${BENCH_C1_SECONDS:-3}
C1_ROUNDS=${BENCH_C1_ROUNDS:-2}
WARMUP=${BENCH_WARMUP:-3}
CONNS=${BENCH_CONNECTIONS:-32}

BENCH_PIDS=()
PG_DB=""
export LATCHKEY_LOG=warn

# Builds release (unless BENCH_SKIP_BUILD=1); sets LK and LB.
bench_build() {
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        echo "building release (latchkey, latchkey-bench)..." >&2
        cargo build --release --quiet -p latchkey -p latchkey-bench
    fi
    local target_dir=${CARGO_TARGET_DIR:-$ROOT_DIR/target}
    LK=$target_dir/release/latchkey
    LB=$target_dir/release/latchkey-bench
}

# Stops every process started by bench_start, drops the database made by
# bench_db.
bench_stop() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    BENCH_PIDS=()
    if [[ -n $PG_DB ]]; then
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
        PG_DB=""
    fi
}
trap bench_stop EXIT
trap 'exit 130' INT TERM

# bench_header COMMAND: the report's header (machine, git, command).
bench_header() {
    echo "## latchkey benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- command: \`$1\`"
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(uname -sr)"
    echo "- git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "- server and load generator (1 thread) share the machine's cores, on loopback"
    echo
}

# bench_db BACKEND DIR: a fresh database for BACKEND (sqlite or postgres,
# optionally with a +redis suffix); sets DB_URL. On PostgreSQL: a new
# database on $PG, and LATCHKEY_MASTER_KEY exported.
bench_db() {
    local store=${1%+redis}
    unset LATCHKEY_MASTER_KEY
    case $store in
        sqlite)
            DB_URL="sqlite://$2/data/latchkey.db"
            ;;
        postgres)
            PG_DB=latchkey_bench_$(od -An -N4 -tx4 /dev/urandom | tr -d ' \n')
            psql "$PG/postgres" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null
            # The database is on loopback: TLS would cost CPU on both sides and
            # protect nothing. BENCH_PG_SSLMODE=prefer measures it anyway.
            DB_URL="$PG/$PG_DB?sslmode=${BENCH_PG_SSLMODE:-disable}"
            LATCHKEY_MASTER_KEY=$(head -c 32 /dev/urandom | base64)
            export LATCHKEY_MASTER_KEY
            ;;
        *)
            echo "unknown backend '$1' (sqlite, postgres, sqlite+redis or postgres+redis)" >&2
            exit 2
            ;;
    esac
}

# bench_config BACKEND DIR: writes DIR/latchkey.toml (listen on a free
# port, the database of bench_db). A +redis backend gets the Redis rate
# limiter with a limit no run reaches, so that every verify of a valid key
# does one Redis round trip and is never refused; `closed`, so that a
# Redis failure is a refusal (a wrong answer), not a silent pass.
# Callers append their own tables.
bench_config() {
    cat >"$2/latchkey.toml" <<TOML
listen = "127.0.0.1:0"
database_url = "$DB_URL"
data_dir = "$2/data"
TOML
    if [[ $1 == *+redis ]]; then
        cat >>"$2/latchkey.toml" <<TOML

[ratelimit]
backend = "redis"
redis_url = "$REDIS"
on_redis_failure = "closed"
default = { limit = 1000000000, window = "1s" }
TOML
    fi
}

# bench_check_redis: fails unless Redis at $REDIS answers PING.
bench_check_redis() {
    if ! command -v redis-cli >/dev/null; then
        echo "redis-cli not found: not checking $REDIS before the run" >&2
        return 0
    fi
    if [[ $(redis-cli -u "$REDIS" ping 2>&1) != PONG ]]; then
        echo "Redis at $REDIS does not answer PING" >&2
        exit 1
    fi
}

# bench_redis_script_calls: how many EVALSHA Redis has run (the rate
# limiter's script; empty without redis-cli).
bench_redis_script_calls() {
    if command -v redis-cli >/dev/null; then
        redis-cli -u "$REDIS" info commandstats 2>/dev/null | tr -d '\r' |
            sed -n 's/^cmdstat_evalsha:calls=\([0-9]*\),.*/\1/p' || true
    fi
}

# bench_root_key CONFIG: sets ROOT_KEY to a new root key.
bench_root_key() {
    ROOT_KEY=$("$LK" --config "$1" --json root-keys create --name bench |
        sed -n 's/^ *"key": *"\([^"]*\)".*/\1/p' | head -n 1)
    if [[ -z $ROOT_KEY ]]; then
        echo "$1: could not create a root key" >&2
        exit 1
    fi
}

# bench_start NAME DIR SED_EXPR COMMAND...: starts COMMAND in the
# background (stdout DIR/NAME.out, stderr DIR/NAME.log) and waits until
# SED_EXPR (a `sed -n` script) prints its URL from the stdout; sets
# STARTED_PID and STARTED_URL.
bench_start() {
    local name=$1 dir=$2 expr=$3
    shift 3
    "$@" >"$dir/$name.out" 2>"$dir/$name.log" &
    STARTED_PID=$!
    BENCH_PIDS+=("$STARTED_PID")
    STARTED_URL=""
    for _ in $(seq 1 300); do
        STARTED_URL=$(sed -n "$expr" "$dir/$name.out" | head -n 1)
        [[ -n $STARTED_URL ]] && break
        if ! kill -0 "$STARTED_PID" 2>/dev/null; then
            echo "$name: exited:" >&2
            cat "$dir/$name.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [[ -z $STARTED_URL ]]; then
        echo "$name: did not say where it listens" >&2
        exit 1
    fi
}

# bench_serve NAME DIR: `latchkey serve` with DIR/latchkey.toml (log at
# warn level: LATCHKEY_LOG above); sets STARTED_PID and STARTED_URL.
bench_serve() {
    bench_start "$1" "$2" 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' \
        "$LK" --config "$2/latchkey.toml" serve
}

# bench_upstream NAME DIR: `latchkey-bench upstream` (200 {"ok":true} to
# everything) on a free port; sets STARTED_PID and STARTED_URL.
bench_upstream() {
    bench_start "$1" "$2" 's/^\(http:\/\/[0-9.:]*\)$/\1/p' "$LB" upstream --listen 127.0.0.1:0
}

# bench_log_tail NAME DIR: the last lines of a non-empty log.
bench_log_tail() {
    if [[ -s $2/$1.log ]]; then
        echo "$1: log ($2/$1.log), last lines:" >&2
        tail -n 5 "$2/$1.log" >&2
    fi
}

# bench_work NAME: a new work directory WORK, and RESULTS in it.
bench_work() {
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    RESULTS=$WORK/results.jsonl
}

# bench_report: renders $RESULTS under $WORK/header.md (and
# $WORK/notes.md, if any) into $WORK/report.md and prints it; fails if a
# run had wrong answers or errors.
bench_report() {
    local status=0
    "$LB" report "$RESULTS" >"$WORK/report.body.md" || status=$?
    cat "$WORK/header.md" "$WORK/report.body.md" >"$WORK/report.md"
    if [[ -s $WORK/notes.md ]]; then
        { echo; cat "$WORK/notes.md"; } >>"$WORK/report.md"
    fi
    echo
    cat "$WORK/report.md"
    echo
    echo "results: $RESULTS, report: $WORK/report.md" >&2
    return "$status"
}
