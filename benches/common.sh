# Helpers shared by benches/overhead.sh and benches/ir_per_tx.sh (sourced, not run).
# The sourcing script sets BENCH_NAME (the prefix of its log lines) first.

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "$BENCH_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# PostgreSQL's binaries: PG_BINDIR, else the newest under /usr/lib/postgresql.
if [[ -z ${PG_BINDIR:-} ]]; then
    PG_BINDIR=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
[[ -x $PG_BINDIR/initdb && -x $PG_BINDIR/pgbench ]] ||
    die "no PostgreSQL binaries in '$PG_BINDIR' (set PG_BINDIR)"
command -v python3 >/dev/null || die "python3 is needed for free ports"

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Run a command as the PostgreSQL owner (postgres when we are root).
as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Let the PostgreSQL owner use directory $1 (creating the postgres user when root).
own_for_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$1"
    fi
    chmod 755 "$1"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Wait until something accepts TCP connections on 127.0.0.1:$1, for at most $3 seconds
# [10]; pid $2 must stay alive.
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 1 $((${3:-10} * 20))); do
        kill -0 "$pid" 2>/dev/null || return 1
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}
