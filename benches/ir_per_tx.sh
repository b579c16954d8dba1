#!/usr/bin/env bash
# Load-independent cost of a proxy per transaction: user-space instructions (callgrind)
# and system calls (strace -c), for pgveil and pgbouncer under the same pgbench runs.
#
# Why: on a shared machine timed CPU/tx moves by ±25 % with the load; instruction and
# system call counts do not, so a change to the relay path can be judged by them.
#
# What it does: starts PostgreSQL (temp dir, fsync=off) and loads pgbench; then for every
# measurement starts a fresh proxy under the tool (callgrind: `valgrind --tool=callgrind`,
# its dump written when the proxy exits; strace: `strace -f -c` attached to all of the
# proxy's threads during the timed run), warms it up with 50 transactions per client and
# runs `pgbench -n -t N` (or `-t 2N`) through it, then stops it. Per transaction =
# (count of the 2N run - count of the N run) / (N x clients): start-up, connection
# set-up, warm-up and shutdown cancel out. Prints one CSV line per target x tool x
# workload x clients (strace lines add the calls per transaction by name).
#
# Environment (defaults in brackets):
#   N          transactions per client of the short run (the long one is 2N) [1000;
#              TPC-B: N/5]
#   CLIENTS    client counts [1 8]
#   WORKLOADS  select (-S), select-prepared (-S -M prepared), tpcb, masked and
#              masked-prepared (benches/overhead/masked_point_select.sql as bench_support,
#              simple and prepared) [select select-prepared tpcb]
#   TARGETS    pgveil (no policy), pgveil+allow-all (benches/overhead/allow_all_policy.toml,
#              every statement decided), pgveil+masked (benches/overhead/masked_policy.toml:
#              bench_support reads name, phone and id_card masked; other workloads run
#              unrestricted as postgres), pgbouncer (session mode) [pgveil pgbouncer]
#   TOOLS      callgrind strace [both]
#   SCALE      pgbench scale factor [10]
#   PGVEIL_BIN pgveil binary. Valgrind 3.19 cannot read lld's output, so build it with
#              RUSTFLAGS="-C link-arg=-fuse-ld=bfd" cargo build --release -p pgveil
#              [target-cg/release/pgveil, built that way with CARGO_TARGET_DIR=target-cg]
#   PG_BINDIR  PostgreSQL binaries [newest /usr/lib/postgresql/*/bin]
#   KEEP=1     keep the temp dir: callgrind.TARGET.WORKLOAD.CLIENTS.{n,2n} (dumps, for
#              callgrind_annotate) or strace.*.{n,2n} (tables)
#
# Example: N=500 CLIENTS=8 WORKLOADS=select TOOLS=callgrind benches/ir_per_tx.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ASSETS=$HERE/overhead

N=${N:-1000}
CLIENTS=${CLIENTS:-"1 8"}
WORKLOADS=${WORKLOADS:-"select select-prepared tpcb"}
TARGETS=${TARGETS:-"pgveil pgbouncer"}
TOOLS=${TOOLS:-"callgrind strace"}
SCALE=${SCALE:-10}
KEEP=${KEEP:-0}
DB=bench

BENCH_NAME=ir_per_tx
# shellcheck source=benches/common.sh
source "$HERE/common.sh"

for tool in $TOOLS; do
    case $tool in
    callgrind) command -v valgrind >/dev/null || die "valgrind is not installed" ;;
    strace) command -v strace >/dev/null || die "strace is not installed" ;;
    *) die "unknown tool $tool" ;;
    esac
done
if [[ -z ${PGVEIL_BIN:-} ]]; then
    PGVEIL_BIN=$REPO/target-cg/release/pgveil
    if [[ ! -x $PGVEIL_BIN ]]; then
        log "building pgveil with the bfd linker into target-cg"
        (cd "$REPO" && CARGO_TARGET_DIR=$REPO/target-cg \
            RUSTFLAGS="-C link-arg=-fuse-ld=bfd" cargo build --release --locked -p pgveil >&2) ||
            die "cargo build failed"
    fi
fi
[[ -x $PGVEIL_BIN ]] || die "no pgveil binary at $PGVEIL_BIN"

TMP=$(mktemp -d /tmp/pgveil-irtx.XXXXXX)
PGDATA=$TMP/pgdata
PROXY_PID=
cleanup() {
    if [[ -n $PROXY_PID ]]; then kill "$PROXY_PID" 2>/dev/null || true; fi
    as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    if [[ $KEEP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
own_for_pg "$TMP"

PGPORT=$(free_port)
as_pg "$PG_BINDIR/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale \
    >"$TMP/initdb.log" 2>&1 || die "initdb failed"
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
fsync = off
max_connections = 100
EOF
as_pg "$PG_BINDIR/pg_ctl" -D "$PGDATA" -l "$TMP/postgres.log" -w start >/dev/null ||
    die "PostgreSQL did not start"
export PGHOST=127.0.0.1 PGSSLMODE=disable PGGSSENCMODE=disable
"$PG_BINDIR/psql" -X -q -p "$PGPORT" -U postgres -d postgres -c "CREATE DATABASE $DB"
"$PG_BINDIR/pgbench" -i -q -s "$SCALE" -p "$PGPORT" -U postgres "$DB" >"$TMP/init.log" 2>&1 ||
    die "pgbench -i failed"
MASKED_USER=bench_support
"$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -p "$PGPORT" -U postgres -d "$DB" \
    -v masked_user="$MASKED_USER" -f "$ASSETS/masked_customers.sql" >/dev/null ||
    die "creating the masked workload's table failed"

# start_proxy TARGET TOOL: the target under the tool (callgrind) or plain (strace attaches
# per run); sets PROXY_PID (the proxy itself) and PROXY_PORT.
start_proxy() {
    local target=$1 tool=$2 port cfg wrap=()
    port=$(free_port)
    [[ $tool == callgrind ]] && wrap=(valgrind --tool=callgrind --dump-instr=no
        --callgrind-out-file="$TMP/callgrind.out.%p" --log-file="$TMP/valgrind.%p.log")
    case $target in
    pgveil*)
        cfg=$TMP/$target.toml
        {
            echo "listen = \"127.0.0.1:$port\""
            case $target in
            pgveil+allow-all) echo "policy = \"$ASSETS/allow_all_policy.toml\"" ;;
            pgveil+masked) echo "policy = \"$ASSETS/masked_policy.toml\"" ;;
            esac
            printf '[upstream]\nhost = "127.0.0.1"\nport = %s\ntls = "disable"\n' "$PGPORT"
            [[ $target != pgveil ]] && printf '[catalog]\nuser = "postgres"\n'
        } >"$cfg"
        "${wrap[@]}" "$PGVEIL_BIN" run --config "$cfg" >"$TMP/$target.log" 2>&1 &
        ;;
    pgbouncer)
        mkdir -p "$TMP/pgbouncer"
        printf '"postgres" ""\n"%s" ""\n' "$MASKED_USER" >"$TMP/pgbouncer/userlist.txt"
        sed -e "s|@PORT@|$port|g" -e "s|@PGPORT@|$PGPORT|g" -e "s|@DB@|$DB|g" \
            -e "s|@POOL@|40|g" -e "s|@DIR@|$TMP/pgbouncer|g" \
            "$ASSETS/pgbouncer.ini.in" >"$TMP/pgbouncer/pgbouncer.ini"
        [[ $IS_ROOT -eq 1 ]] && chown -R postgres "$TMP/pgbouncer"
        # As postgres from the start (pgbouncer refuses root), so valgrind's files match.
        as_pg "${wrap[@]}" /usr/sbin/pgbouncer "$TMP/pgbouncer/pgbouncer.ini" \
            >"$TMP/pgbouncer/stdout.log" 2>&1 &
        ;;
    *) die "unknown target $target" ;;
    esac
    local launched=$!
    wait_port "$port" "$launched" 60 || die "$target did not start"
    # The proxy's own pid, the one listening (runuser forks it; valgrind runs in place of
    # the program).
    PROXY_PID=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
    [[ -n $PROXY_PID ]] || die "no listener pid for $target"
    LAUNCHED_PID=$launched
    PROXY_PORT=$port
}

stop_proxy() {
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$LAUNCHED_PID" 2>/dev/null || true
    PROXY_LAST=$PROXY_PID
    PROXY_PID=
}

bench() { # bench WORKLOAD CLIENTS TX
    local args=(-n -t "$3" -c "$2" -j "$(($2 < 2 ? $2 : 2))" -p "$PROXY_PORT")
    case $1 in
    select) args+=(-U postgres -S) ;;
    select-prepared) args+=(-U postgres -S -M prepared) ;;
    tpcb) args+=(-U postgres) ;;
    masked) args+=(-U "$MASKED_USER" -f "$ASSETS/masked_point_select.sql") ;;
    masked-prepared) args+=(-U "$MASKED_USER" -f "$ASSETS/masked_point_select.sql" -M prepared) ;;
    *) die "unknown workload $1" ;;
    esac
    "$PG_BINDIR/pgbench" "${args[@]}" "$DB" >"$TMP/pgbench.log" 2>&1 ||
        die "pgbench failed: $(tail -n 3 "$TMP/pgbench.log")"
}

# measure TARGET TOOL WORKLOAD CLIENTS TX FILE: a fresh proxy under the tool, a warm-up
# of 50 transactions per client (caches, decisions, lazy statics), one pgbench run of TX
# per client, the proxy stopped; COUNT = instructions of the whole process (callgrind,
# dump written at exit) or system calls during the run (strace); the tool's report is
# kept in FILE. Start-up, warm-up and shutdown are the same in the N and 2N runs.
measure() {
    local target=$1 tool=$2 sp
    start_proxy "$target" "$tool"
    bench "$3" "$4" 50
    case $tool in
    callgrind)
        bench "$3" "$4" "$5"
        stop_proxy
        cp "$TMP/callgrind.out.$PROXY_LAST" "$6"
        COUNT=$(awk '/^(summary|totals):/ {print $2; exit}' "$6")
        ;;
    strace)
        strace -f -c -o "$6" -p "$(ls /proc/"$PROXY_PID"/task | paste -sd, -)" 2>/dev/null &
        sp=$!
        sleep 1
        bench "$3" "$4" "$5"
        kill -INT "$sp"
        wait "$sp" 2>/dev/null || true
        stop_proxy
        COUNT=$(awk '$NF == "total" {print $(NF-2) + 0; exit}' "$6")
        ;;
    esac
    [[ -n $COUNT ]] || die "no count from $tool for $target"
}

# Per-call counts of the last two strace tables, differenced, per transaction.
strace_detail() { # strace_detail FILE_N FILE_2N TXS
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
def calls(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total", "syscall"):
            out[f[-1]] = int(f[3])
    return out
a, b, txs = calls(sys.argv[1]), calls(sys.argv[2]), int(sys.argv[3])
rows = sorted(((b.get(k, 0) - a.get(k, 0)) / txs, k) for k in set(a) | set(b))
print(" ".join(f"{k}={v:.2f}" for v, k in reversed(rows) if abs(v) >= 0.01))
EOF
}

echo "target,tool,workload,clients,per_tx,detail"
for target in $TARGETS; do
    for tool in $TOOLS; do
        for workload in $WORKLOADS; do
            n=$N
            [[ $workload == tpcb ]] && n=$(((N + 4) / 5))
            for c in $CLIENTS; do
                f=$TMP/$tool.$target.$workload.$c
                measure "$target" "$tool" "$workload" "$c" "$n" "$f.n"
                a=$COUNT
                measure "$target" "$tool" "$workload" "$c" "$((2 * n))" "$f.2n"
                b=$COUNT
                per=$(python3 -c "print(f'{($b - $a) / ($n * $c):.1f}')")
                detail=
                [[ $tool == strace ]] && detail=$(strace_detail "$f.n" "$f.2n" "$((n * c))")
                echo "$target,$tool,$workload,$c,$per,$detail"
                log "$target $tool $workload c=$c: $per per tx ($a / $b over $n / $((2 * n)) tx per client)"
            done
        done
    done
done
