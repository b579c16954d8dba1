#!/usr/bin/env bash
# End-to-end overhead of pgveil compared with a direct connection, pgbouncer and a plain
# TCP relay, measured with pgbench against a throwaway PostgreSQL.
#
# Why: pgveil sits on every query path; users need to know what the extra hop costs in
# throughput and CPU, next to the tools they already run (pgbouncer, haproxy).
#
# What it does: starts PostgreSQL (temp dir, fsync=off), pgveil (release build, no
# policy), pgbouncer (session pooling) and haproxy `mode tcp` (socat if haproxy is
# missing), loads pgbench scale 10, then for every workload x client count runs rounds of
# direct and through-target runs (direct, pgveil, pgbouncer, relay; every second round in
# reverse order so slow drift of the machine hits all targets alike). It prints TPS
# direct vs. through each target, the ratio, and each target's CPU time per transaction
# (utime+stime from /proc/<pid>/stat over its runs / transactions), then PASS/FAIL for
# pgveil's targets. It always exits 0 when the measurement ran: it is not a gate.
#
# Environment (defaults in brackets):
#   DURATION   seconds per pgbench run [15]
#   PAIRS      rounds of (direct, targets...) per workload and client count [3]
#   CLIENTS    client counts [1 8 32]
#   WORKLOADS  select (pgbench -S), select-prepared (-S -M prepared), tpcb (default
#              TPC-B-like script) [select select-prepared tpcb]
#   TARGETS    pgveil pgbouncer relay [all three]
#   JOBS       pgbench threads (-j, capped at the client count) [2]
#   SCALE      pgbench scale factor [10]
#   WARMUP     seconds of discarded direct warm-up per workload, 0 = none [5]
#   AUDIT=1    also run pgveil with an allow-all policy with and without a file audit sink
#              (targets pgveil+policy-noaudit, pgveil+policy-audit): the cost of auditing
#   MASKED=1   also run the masked point select (benches/overhead/masked_point_select.sql,
#              simple and prepared) as MASKED_USER [bench_support] through pgveil without
#              a policy, with the allow-all policy (the baseline) and with POLICY
#              [benches/overhead/masked_policy.toml]
#   PROFILE=1  instead of the table: under `pgbench -S -c 8` for PROFILE_SECONDS [15],
#              count each target's CPU, context switches and system calls per
#              transaction (perf stat) and perf-record pgveil; reports go next to $OUT
#   RELAY      haproxy, or socat to force the fallback relay [haproxy]
#   PGVEIL_BIN pgveil binary [built with `cargo build --release -p pgveil`]
#   PG_BINDIR  PostgreSQL binaries [newest /usr/lib/postgresql/*/bin]
#   OUT        results prefix: writes $OUT.csv, $OUT.json, $OUT.runs.csv
#              [./overhead-<UTC timestamp>]
#
# Quick run: DURATION=5 PAIRS=1 CLIENTS="1 8" benches/overhead.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ASSETS=$HERE/overhead

DURATION=${DURATION:-15}
PAIRS=${PAIRS:-3}
CLIENTS=${CLIENTS:-"1 8 32"}
WORKLOADS=${WORKLOADS:-"select select-prepared tpcb"}
TARGETS=${TARGETS:-"pgveil pgbouncer relay"}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
WARMUP=${WARMUP:-5}
MASKED=${MASKED:-0}
POLICY=${POLICY:-$ASSETS/masked_policy.toml}
MASKED_USER=${MASKED_USER:-bench_support}
PROFILE=${PROFILE:-0}
RELAY=${RELAY:-haproxy}
PROFILE_SECONDS=${PROFILE_SECONDS:-15}
OUT=${OUT:-$PWD/overhead-$(date -u +%Y%m%dT%H%M%SZ)}
DB=bench
PGUSER_BENCH=postgres

BENCH_NAME=overhead
# shellcheck source=benches/common.sh
source "$HERE/common.sh"

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------

# Install a Debian package when a tool is missing (root, else sudo); false if impossible.
ensure_pkg() {
    local bin=$1 pkg=$2
    [[ -x $bin ]] && return 0
    log "$bin missing: installing $pkg"
    if [[ $IS_ROOT -eq 1 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >&2 || return 1
    elif command -v sudo >/dev/null; then
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" >&2 || return 1
    else
        return 1
    fi
    [[ -x $bin ]]
}

# CPU clock ticks used so far by a process and its children (reaped ones included).
cpu_ticks() {
    local pid=$1 stat total=0 child
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || {
        echo 0
        return
    }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    total=$((${12} + ${13} + ${14} + ${15}))
    # shellcheck disable=SC2013 # the file is a space-separated list of pids
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        total=$((total + $(cpu_ticks "$child")))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------
# Temp dir and cleanup
# ---------------------------------------------------------------------------------------

TMP=$(mktemp -d /tmp/pgveil-overhead.XXXXXX)
STARTED_PIDS=()
PGDATA=$TMP/pgdata
cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -f $PGDATA/postmaster.pid ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    for pid in "${STARTED_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

own_for_pg "$TMP"

# ---------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------

PGPORT=$(free_port)
log "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on port $PGPORT in $TMP"
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale \
    >"$TMP/initdb.log" 2>&1 || {
    cat "$TMP/initdb.log" >&2
    die "initdb failed"
}
cat >>"$PGDATA/postgresql.conf" <<EOF
# benches/overhead.sh
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
fsync = off
max_connections = 200
shared_buffers = 256MB
EOF
as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$TMP/postgres.log" -w start >/dev/null ||
    {
        cat "$TMP/postgres.log" >&2
        die "PostgreSQL did not start"
    }

export PGHOST=127.0.0.1 PGSSLMODE=disable PGGSSENCMODE=disable
psql_direct() {
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U postgres "$@"
}
psql_direct -d postgres -c "CREATE DATABASE $DB"
log "pgbench -i -s $SCALE"
"$PG_BINDIR/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres "$DB" \
    >"$TMP/pgbench-init.log" 2>&1 || {
    cat "$TMP/pgbench-init.log" >&2
    die "pgbench -i failed"
}

if [[ $MASKED == 1 ]]; then
    log "creating public.customers (1000 rows) and user $MASKED_USER"
    psql_direct -d "$DB" -v masked_user="$MASKED_USER" -f "$ASSETS/masked_customers.sql"
fi

# ---------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------

declare -A PORT PID NOTE
PORT[direct]=$PGPORT

# The pgveil binary: PGVEIL_BIN, or a release build of this checkout.
ensure_pgveil_bin() {
    local target_dir
    if [[ -z ${PGVEIL_BIN:-} ]]; then
        log "building pgveil (cargo build --release -p pgveil)"
        (cd "$REPO" && cargo build --release -p pgveil >&2) || die "cargo build failed"
        target_dir=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
        PGVEIL_BIN=$target_dir/release/pgveil
    fi
    [[ -x $PGVEIL_BIN ]] || die "no pgveil binary at $PGVEIL_BIN"
}

# start_pgveil NAME [POLICY [AUDIT]]: a pgveil listening on a free port, upstream tls
# disabled; AUDIT=1 adds a file audit sink (fsync interval) in the temp dir.
start_pgveil() {
    local name=$1 policy=${2:-} audit=${3:-} port cfg pid
    ensure_pgveil_bin
    port=$(free_port)
    cfg=$TMP/$name.toml
    {
        echo "listen = \"127.0.0.1:$port\""
        [[ -n $policy ]] && echo "policy = \"$policy\""
        echo "[upstream]"
        echo "host = \"127.0.0.1\""
        echo "port = $PGPORT"
        echo "tls = \"disable\""
        if [[ -n $policy ]]; then
            echo "[catalog]"
            echo "user = \"postgres\""
        fi
        if [[ -n $audit ]]; then
            echo "[audit]"
            echo "on_failure = \"block\""
            echo "[[audit.sinks]]"
            echo "kind = \"file\""
            echo "path = \"$TMP/$name-audit.jsonl\""
        fi
    } >"$cfg"
    "$PGVEIL_BIN" run --config "$cfg" >"$TMP/$name.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "$name did not start; its log:"
        cat "$TMP/$name.log" >&2
        kill "$pid" 2>/dev/null || true
        return 1
    fi
    PORT[$name]=$port
    PID[$name]=$pid
    NOTE[$name]="$("$PGVEIL_BIN" --version 2>/dev/null || echo pgveil) (git $(git -C "$REPO" \
        rev-parse --short HEAD 2>/dev/null || echo unknown)), ${policy:+policy = $policy}"
    [[ -n $policy ]] || NOTE[$name]+="no policy"
}

start_pgbouncer() {
    local port pool max_c=0 c pid
    ensure_pkg /usr/sbin/pgbouncer pgbouncer || {
        log "pgbouncer unavailable: skipping it"
        return 1
    }
    for c in $CLIENTS; do ((c > max_c)) && max_c=$c; done
    pool=$((max_c + 5))
    port=$(free_port)
    mkdir -p "$TMP/pgbouncer"
    {
        echo "\"$PGUSER_BENCH\" \"\""
        [[ $MASKED == 1 ]] && echo "\"$MASKED_USER\" \"\""
    } >"$TMP/pgbouncer/userlist.txt"
    sed -e "s|@PORT@|$port|g" -e "s|@PGPORT@|$PGPORT|g" -e "s|@DB@|$DB|g" \
        -e "s|@POOL@|$pool|g" -e "s|@DIR@|$TMP/pgbouncer|g" \
        "$ASSETS/pgbouncer.ini.in" >"$TMP/pgbouncer/pgbouncer.ini"
    local user_opt=()
    if [[ $IS_ROOT -eq 1 ]]; then
        chown -R postgres "$TMP/pgbouncer"
        user_opt=(-u postgres)
    fi
    /usr/sbin/pgbouncer "${user_opt[@]}" "$TMP/pgbouncer/pgbouncer.ini" \
        >"$TMP/pgbouncer/stdout.log" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "pgbouncer did not start:"
        cat "$TMP/pgbouncer/stdout.log" "$TMP/pgbouncer/pgbouncer.log" >&2 2>/dev/null || true
        return 1
    fi
    PORT[pgbouncer]=$port
    PID[pgbouncer]=$pid
}

start_relay() {
    local port pid
    port=$(free_port)
    if [[ $RELAY != socat ]] && ensure_pkg /usr/sbin/haproxy haproxy; then
        sed -e "s|@PORT@|$port|g" -e "s|@PGPORT@|$PGPORT|g" \
            "$ASSETS/haproxy.cfg.in" >"$TMP/haproxy.cfg"
        /usr/sbin/haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
        NOTE[relay]="haproxy $(/usr/sbin/haproxy -v | awk 'NR==1 {print $3}') mode tcp"
    elif [[ -x /usr/bin/socat ]] || ensure_pkg /usr/bin/socat socat; then
        /usr/bin/socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr,nodelay" \
            "TCP:127.0.0.1:$PGPORT,nodelay" >"$TMP/socat.log" 2>&1 &
        NOTE[relay]="socat (fork per connection)"
    else
        log "neither haproxy nor socat available: skipping the relay"
        return 1
    fi
    pid=$!
    STARTED_PIDS+=("$pid")
    if ! wait_port "$port" "$pid"; then
        log "relay did not start"
        cat "$TMP"/haproxy.log "$TMP"/socat.log >&2 2>/dev/null || true
        return 1
    fi
    PORT[relay]=$port
    PID[relay]=$pid
}

ACTIVE_TARGETS=()
for t in $TARGETS; do
    case $t in
    pgveil) start_pgveil pgveil && ACTIVE_TARGETS+=(pgveil) ;;
    pgbouncer) start_pgbouncer && ACTIVE_TARGETS+=(pgbouncer) ;;
    relay) start_relay && ACTIVE_TARGETS+=(relay) ;;
    *) die "unknown target '$t' (pgveil pgbouncer relay)" ;;
    esac
done
NOTE[pgbouncer]="$(/usr/sbin/pgbouncer --version 2>/dev/null | head -n 1) pool_mode=session"

# AUDIT=1: the same pgveil build with an allow-all policy, with and without a file audit
# sink, as two more targets of the normal workloads (issue: audit on costs <= 5%).
if [[ ${AUDIT:-0} == 1 ]]; then
    allow_all=$REPO/benches/overhead/allow_all_policy.toml
    start_pgveil pgveil+policy-noaudit "$allow_all" && ACTIVE_TARGETS+=(pgveil+policy-noaudit)
    start_pgveil pgveil+policy-audit "$allow_all" 1 && ACTIVE_TARGETS+=(pgveil+policy-audit)
fi

MASKED_TARGETS=()
if [[ $MASKED == 1 && $PROFILE != 1 ]]; then
    [[ -n ${PID[pgveil]:-} ]] || start_pgveil pgveil || die "pgveil did not start"
    MASKED_TARGETS=(pgveil)
    # The issue's baseline: the same build deciding every statement with an allow-all
    # policy (the masked role then reads raw values).
    start_pgveil pgveil+allow-all "$REPO/benches/overhead/allow_all_policy.toml" &&
        MASKED_TARGETS+=(pgveil+allow-all)
    policy_abs=$(cd "$(dirname "$POLICY")" && pwd)/$(basename "$POLICY")
    [[ -r $policy_abs ]] || die "POLICY file $POLICY not readable"
    if ! start_pgveil pgveil+policy "$policy_abs"; then
        log "pgveil did not start with the policy: measuring pgveil+policy without one"
        start_pgveil pgveil+policy || die "pgveil did not start"
        NOTE[pgveil+policy]="policy REJECTED at startup: run WITHOUT a policy"
    fi
    MASKED_TARGETS+=(pgveil+policy)
    # The peer on the same script: issue #4 wants the masked ratio at least pgbouncer's.
    [[ -n ${PID[pgbouncer]:-} ]] && MASKED_TARGETS+=(pgbouncer)
fi

ALL_TARGETS=()
for t in "${ACTIVE_TARGETS[@]}" "${MASKED_TARGETS[@]}"; do
    [[ " ${ALL_TARGETS[*]} " == *" $t "* ]] || ALL_TARGETS+=("$t")
done
for t in "${ALL_TARGETS[@]}"; do
    log "target $t on port ${PORT[$t]} (pid ${PID[$t]}): ${NOTE[$t]:-}"
done

# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------

# pgbench_args WORKLOAD: the pgbench options and user of a workload.
pgbench_args() {
    case $1 in
    select) echo "-U $PGUSER_BENCH -S" ;;
    select-prepared) echo "-U $PGUSER_BENCH -S -M prepared" ;;
    tpcb) echo "-U $PGUSER_BENCH" ;;
    masked) echo "-U $MASKED_USER -f $ASSETS/masked_point_select.sql" ;;
    masked-prepared) echo "-U $MASKED_USER -f $ASSETS/masked_point_select.sql -M prepared" ;;
    *) die "unknown workload '$1' (select select-prepared tpcb)" ;;
    esac
}

# What pgbench's own pre-run vacuum does, run directly so that only the measured traffic
# goes through the target.
prepare_run() {
    if [[ $1 == tpcb ]]; then
        psql_direct -d "$DB" -c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" \
            -c "TRUNCATE pgbench_history" >/dev/null
    fi
}

# run_pgbench WORKLOAD CLIENTS PORT SECONDS LOGFILE: prints "tps transactions" or "fail".
run_pgbench() {
    local workload=$1 clients=$2 port=$3 seconds=$4 logfile=$5 jobs=$JOBS args
    ((jobs > clients)) && jobs=$clients
    args=$(pgbench_args "$workload")
    prepare_run "$workload"
    # shellcheck disable=SC2086
    if ! "$PG_BINDIR/pgbench" -n -h 127.0.0.1 -p "$port" $args -c "$clients" -j "$jobs" \
        -T "$seconds" "$DB" >"$logfile" 2>&1; then
        echo fail
        return
    fi
    awk '/number of transactions actually processed:/ {tx=$NF}
         /^tps = / && /without initial connection time/ {tps=$3}
         END {if (tx == "" || tps == "") print "fail"; else print tps, tx}' "$logfile"
}

RUNS=$OUT.runs.csv
SEQ=0
mkdir -p "$(dirname "$OUT")"

# measure WORKLOAD CLIENTS TARGET PAIR: one run, appended to the runs CSV.
measure() {
    local workload=$1 clients=$2 target=$3 pair=$4 before=0 after=0 res tps tx cpu="" ok=1 load
    local logfile=$TMP/run-$SEQ.log
    load=$(cut -d' ' -f1 /proc/loadavg)
    [[ $target != direct ]] && before=$(cpu_ticks "${PID[$target]}")
    res=$(run_pgbench "$workload" "$clients" "${PORT[$target]}" "$DURATION" "$logfile")
    if [[ $target != direct ]]; then
        sleep 0.2 # let the target finish closing the sessions (socat children exit)
        after=$(cpu_ticks "${PID[$target]}")
        cpu=$(python3 -c "print(($after - $before) / $CLK_TCK)")
    fi
    if [[ $res == fail ]]; then
        ok=0
        tps=0
        tx=0
        log "run failed: $workload c=$clients via $target; pgbench said:"
        tail -n 5 "$logfile" >&2
    else
        read -r tps tx <<<"$res"
    fi
    echo "$workload,$clients,$target,$pair,$SEQ,$tps,$tx,$cpu,$load,$ok" >>"$RUNS"
    log "$(printf '%-16s c=%-3s %-14s pair %s: %10.1f tps%s' "$workload" "$clients" "$target" \
        "$pair" "$tps" "${cpu:+, cpu ${cpu}s}")"
    SEQ=$((SEQ + 1))
}

# profile_stat TARGET: count the target's CPU, context switches and system calls during
# `pgbench -S -c 8` (perf stat, cheap) and append them per transaction to $OUT.perfstat.csv.
PERF_EVENTS=task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter
PERF_EVENTS+=,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom
PERF_EVENTS+=,syscalls:sys_enter_write,syscalls:sys_enter_read
PERF_EVENTS+=,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
profile_stat() {
    local target=$1 window=$((PROFILE_SECONDS - 2)) bench_pid res
    run_pgbench select 8 "${PORT[$target]}" "$PROFILE_SECONDS" "$TMP/stat-$target.log" \
        >"$TMP/stat-$target.res" &
    bench_pid=$!
    sleep 1
    perf stat -x, -e "$PERF_EVENTS" -p "${PID[$target]}" -o "$TMP/stat-$target.txt" \
        -- sleep "$window" 2>>"$TMP/perf.log" || log "perf stat of $target failed"
    wait "$bench_pid"
    res=$(cat "$TMP/stat-$target.res")
    [[ $res == fail ]] && {
        log "pgbench through $target failed"
        return
    }
    python3 "$ASSETS/perf_stat.py" add "$OUT.perfstat.csv" "$target" "${res%% *}" "$window" \
        "$TMP/stat-$target.txt"
}

if [[ $PROFILE == 1 ]]; then
    [[ -n ${PID[pgveil]:-} ]] || die "pgveil did not start"
    command -v perf >/dev/null || ensure_pkg /usr/bin/perf linux-perf || die "perf unavailable"
    ((PROFILE_SECONDS >= 5)) || die "PROFILE_SECONDS must be at least 5"
    log "warm-up: select c=8 direct for 5s"
    run_pgbench select 8 "$PGPORT" 5 "$TMP/warmup.log" >/dev/null
    rm -f "$OUT.perfstat.csv"
    for t in "${ACTIVE_TARGETS[@]}"; do
        log "perf stat of $t under pgbench -S -c 8 for ${PROFILE_SECONDS}s"
        profile_stat "$t"
    done
    log "perf record of pgveil (pid ${PID[pgveil]}) under pgbench -S -c 8"
    run_pgbench select 8 "${PORT[pgveil]}" "$PROFILE_SECONDS" "$TMP/profile-run.log" \
        >"$TMP/profile-res" &
    bench_pid=$!
    sleep 1
    perf record -F 499 --call-graph dwarf,16384 -p "${PID[pgveil]}" -o "$OUT.perf.data" \
        -- sleep $((PROFILE_SECONDS - 2)) 2>>"$TMP/perf.log" || {
        cat "$TMP/perf.log" >&2
        die "perf record failed"
    }
    wait "$bench_pid"
    log "pgbench via pgveil under perf record: $(cut -d' ' -f1 "$TMP/profile-res") tps"
    perf report -i "$OUT.perf.data" --no-children --stdio --percent-limit 0.3 \
        --sort dso,symbol -g none >"$OUT.perf-self.txt" 2>/dev/null
    perf report -i "$OUT.perf.data" --children --stdio --percent-limit 0.3 \
        --sort symbol -g none >"$OUT.perf-children.txt" 2>/dev/null
    perf report -i "$OUT.perf.data" --no-children --stdio --sort dso -g none \
        >"$OUT.perf-dso.txt" 2>/dev/null
    echo
    echo "pgveil self time by binary (perf record, cpu-clock sampling):"
    grep -v '^#' "$OUT.perf-dso.txt" | grep -v '^$' | head -n 6
    echo
    echo "pgveil hottest symbols (self):"
    grep -v '^#' "$OUT.perf-self.txt" | grep -v '^$' | head -n 25 | cut -c1-150
    echo
    [[ -f $OUT.perfstat.csv ]] && python3 "$ASSETS/perf_stat.py" table "$OUT.perfstat.csv"
    echo
    echo "perf data: $OUT.perf.data; reports: $OUT.perf-{self,children,dso}.txt;" \
        "per-transaction counts: $OUT.perfstat.csv"
    exit 0
fi

echo "workload,clients,target,pair,seq,tps,transactions,cpu_seconds,load1,ok" >"$RUNS"

round_order() { # round_order PAIR TARGET...: direct first on odd rounds, last on even.
    local pair=$1
    shift
    local order=(direct "$@") i
    if ((pair % 2 == 0)); then
        for ((i = ${#order[@]} - 1; i >= 0; i--)); do echo "${order[i]}"; done
    else
        printf '%s\n' "${order[@]}"
    fi
}

run_workloads() { # run_workloads "WORKLOADS" TARGET...
    local workloads=$1 w c p t
    shift
    for w in $workloads; do
        if ((WARMUP > 0)); then
            log "warm-up: $w c=8 direct for ${WARMUP}s"
            run_pgbench "$w" 8 "$PGPORT" "$WARMUP" "$TMP/warmup.log" >/dev/null
        fi
        for c in $CLIENTS; do
            for ((p = 1; p <= PAIRS; p++)); do
                for t in $(round_order "$p" "$@"); do
                    measure "$w" "$c" "$t" "$p"
                done
            done
        done
    done
}

total_runs=0
for w in $WORKLOADS; do pgbench_args "$w" >/dev/null; done
n_clients=$(wc -w <<<"$CLIENTS")
n_main=$(($(wc -w <<<"$WORKLOADS") * n_clients * PAIRS * (1 + ${#ACTIVE_TARGETS[@]})))
n_masked=0
[[ ${#MASKED_TARGETS[@]} -gt 0 ]] && n_masked=$((2 * n_clients * PAIRS * (1 + ${#MASKED_TARGETS[@]})))
total_runs=$((n_main + n_masked))
log "$total_runs runs of ${DURATION}s: about $(((total_runs * (DURATION + 1)) / 60)) minutes"

START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
[[ ${#ACTIVE_TARGETS[@]} -gt 0 ]] && run_workloads "$WORKLOADS" "${ACTIVE_TARGETS[@]}"
[[ ${#MASKED_TARGETS[@]} -gt 0 ]] && run_workloads "masked masked-prepared" "${MASKED_TARGETS[@]}"
END_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------

META=$TMP/meta.tsv
{
    printf 'started\t%s\n' "$STARTED_AT"
    printf 'finished\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    printf 'command\t%s\n' "${TOKIO_WORKER_THREADS:+TOKIO_WORKER_THREADS=$TOKIO_WORKER_THREADS }RELAY=$RELAY DURATION=$DURATION PAIRS=$PAIRS CLIENTS=\"$CLIENTS\" WORKLOADS=\"$WORKLOADS\" TARGETS=\"$TARGETS\" MASKED=$MASKED benches/overhead.sh"
    printf 'duration_s\t%s\npairs\t%s\njobs\t%s\nscale\t%s\n' "$DURATION" "$PAIRS" "$JOBS" "$SCALE"
    printf 'host_cpus\t%s\n' "$(nproc)"
    printf 'loadavg_start\t%s\nloadavg_end\t%s\n' "$START_LOAD" "$END_LOAD"
    printf 'postgresql\t%s\n' "$("$PG_BINDIR/postgres" --version)"
    for t in "${ALL_TARGETS[@]}"; do
        printf 'target\t%s\t%s\n' "$t" "${NOTE[$t]:-}"
    done
} >"$META"
python3 "$ASSETS/report.py" "$RUNS" "$META" "$OUT"
