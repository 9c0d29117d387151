#!/usr/bin/env bash
# Start, stop or query a throw-away userspace NFS server (nfs-ganesha, VFS FSAL).
#
# This machine's kernel has no NFS client or server, so the tests use nfs-ganesha:
# NFSv4 only (`Protocols = 4`, TCP), bound to 127.0.0.1 on a free port, no rpcbind,
# no NLM/RQUOTA, graceless (no 90 s grace period at start). Everything lives under DIR:
#   DIR/ganesha.conf  DIR/ganesha.pid  DIR/ganesha.log  DIR/ganesha.out  DIR/recovery/
#   DIR/export/       the exported directory, seen by clients as NFS_EXPORT (/export)
#   DIR/env           shell syntax: NFS_HOST NFS_PORT NFS_EXPORT NFS_EXPORT_DIR NFS_PID
#
# The Debian packages (not installed here): nfs-ganesha nfs-ganesha-vfs
# (libnfs-utils for the nfs-ls / nfs-cp clients the tests use).
#
# Usage: scripts/services/nfs-ganesha.sh start|stop|status DIR
#   start   a no-op when the server of DIR already runs and answers; otherwise write the
#           config and start ganesha.nfsd (it daemonizes), then wait until its port accepts
#           connections (NFS_GANESHA_START_TIMEOUT, default 20 s). NFS_PORT=N picks the
#           port (default: a free one).
#   stop    SIGTERM the server of DIR by PID, wait for it to exit (SIGKILL after
#           NFS_GANESHA_STOP_TIMEOUT, default 10 s); idempotent. DIR stays in place.
#   status  exit 0 when the server of DIR runs and its port accepts connections, 3 otherwise.
#
# Servers are never shared between DIRs: several can run at once.
set -euo pipefail

START_TIMEOUT="${NFS_GANESHA_START_TIMEOUT:-20}"
STOP_TIMEOUT="${NFS_GANESHA_STOP_TIMEOUT:-10}"
PSEUDO="/export"
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

log() { printf 'nfs-ganesha.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

[[ $# -eq 2 && -n "$2" ]] || { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
CMD="$1"
DIR="$(realpath -m -- "$2")"
CONF="$DIR/ganesha.conf"
PIDFILE="$DIR/ganesha.pid"
ENV_FILE="$DIR/env"

# pid_of: the PID of THIS DIR's ganesha.nfsd, nothing when it does not run.
pid_of() {
    local pid cmdline
    [[ -r "$PIDFILE" ]] || return 0
    pid="$(tr -dc '0-9' <"$PIDFILE" || true)"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *ganesha.nfsd*"$CONF"* ]] && echo "$pid"
    return 0
}

# port_answers PORT: true when 127.0.0.1:PORT accepts a TCP connection.
port_answers() {
    timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

configured_port() {
    sed -n 's/^ *NFS_Port = \([0-9]*\);/\1/p' "$CONF" 2>/dev/null | head -n1
}

running_and_answering() {
    local port
    [[ -n "$(pid_of)" && -r "$ENV_FILE" ]] || return 1
    port="$(configured_port)"
    [[ -n "$port" ]] && port_answers "$port"
}

write_config() {
    local port="$1"
    cat >"$CONF" <<EOF
# Written by scripts/services/nfs-ganesha.sh: a private NFSv4-only test server.
NFS_CORE_PARAM {
    Protocols = 4;
    Bind_Addr = 127.0.0.1;
    NFS_Port = $port;
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}
NFSv4 {
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = $DIR/recovery;
}
EXPORT {
    Export_Id = 1;
    Path = $DIR/export;
    Pseudo = $PSEUDO;
    Access_Type = RW;
    Squash = No_Root_Squash;
    Protocols = 4;
    Transports = TCP;
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG {
    Default_Log_Level = EVENT;
}
EOF
}

start() {
    local port pid deadline
    command -v ganesha.nfsd >/dev/null 2>&1 \
        || die "ganesha.nfsd not found: install nfs-ganesha nfs-ganesha-vfs"
    if running_and_answering; then
        log "already running in $DIR (pid $(pid_of), port $(configured_port))"
        return 0
    fi
    stop_server
    mkdir -p "$DIR/export" "$DIR/recovery"
    port="${NFS_PORT:-$(free_port)}"
    write_config "$port"
    rm -f "$PIDFILE"
    ganesha.nfsd -f "$CONF" -L "$DIR/ganesha.log" -p "$PIDFILE" \
        </dev/null >>"$DIR/ganesha.out" 2>&1 || die "ganesha.nfsd failed: $(tail -n 5 "$DIR/ganesha.out")"
    deadline=$((SECONDS + START_TIMEOUT))
    until [[ -n "$(pid_of)" ]] && port_answers "$port"; do
        if ((SECONDS >= deadline)); then
            log "ganesha did not answer on 127.0.0.1:$port within ${START_TIMEOUT}s; log tail:"
            tail -n 20 "$DIR/ganesha.log" >&2 || true
            stop_server
            exit 1
        fi
        sleep 0.1
    done
    pid="$(pid_of)"
    cat >"$ENV_FILE" <<EOF
NFS_HOST=127.0.0.1
NFS_PORT=$port
NFS_EXPORT=$PSEUDO
NFS_EXPORT_DIR=$DIR/export
NFS_PID=$pid
EOF
    log "started in $DIR (pid $pid, nfs://127.0.0.1:$port$PSEUDO)"
}

stop_server() {
    local pid deadline
    pid="$(pid_of)"
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    # (a zombie has an empty cmdline: it counts as gone even if nobody reaps it)
    while [[ -s "/proc/$pid/cmdline" ]]; do
        if ((SECONDS >= deadline)); then
            log "pid $pid ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDFILE"
}

case "$CMD" in
    start) start ;;
    stop) stop_server ;;
    status) running_and_answering || exit 3 ;;
    *) echo "usage: $0 start|stop|status DIR" >&2; exit 2 ;;
esac
