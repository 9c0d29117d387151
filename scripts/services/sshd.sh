#!/usr/bin/env bash
# Start, stop or query a private OpenSSH sshd on 127.0.0.1 for tests.
#
# Usage: scripts/services/sshd.sh start|stop|status DIR
#
# Everything lives in DIR: sshd_config, the ed25519 host key, the pid file,
# the log (sshd.log) and authorized_keys (AuthorizedKeysFile, so tests add
# their client keys there and never touch /root/.ssh). The port is a free
# one picked at start and kept in DIR/port, so a restart reuses it. After a
# start DIR/env holds (and stdout prints):
#   SSHD_PORT=...  SSHD_HOST_KEY_PUB=DIR/ssh_host_ed25519_key.pub
#   SSHD_HOST_KEY_FINGERPRINT=SHA256:...  SSHD_AUTHORIZED_KEYS=DIR/authorized_keys
#   SSHD_PID=...
#
# Logins are as root with a public key only (PermitRootLogin prohibit-password).
# SSHD_PASSWORD_AUTH=1 turns PasswordAuthentication on (and PermitRootLogin yes),
# but NO account gets a password: root's password is never changed and no test
# user is created, so every password attempt fails ("Permission denied"). That
# mode only lets tests check how a client reports a rejected password.
#
# Needs openssh-server (/usr/sbin/sshd) and ssh-keygen. Every command is
# idempotent; stop goes by PID (pid file), never by process name.
set -euo pipefail

SSHD_BIN=/usr/sbin/sshd
START_TIMEOUT="${SSHD_START_TIMEOUT:-10}"

log() { printf 'sshd.sh: %s\n' "$*" >&2; }

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD="$1"
if [[ ! -d "$2" ]]; then
    case "$CMD" in
        start) mkdir -p "$2" ;;
        stop) exit 0 ;;
        status) echo "sshd: stopped (no $2)"; exit 3 ;;
        *) usage ;;
    esac
fi
DIR="$(cd "$2" && pwd -P)"
CONF="$DIR/sshd_config"
HOST_KEY="$DIR/ssh_host_ed25519_key"
PIDFILE="$DIR/sshd.pid"
AUTH_KEYS="$DIR/authorized_keys"
LOG="$DIR/sshd.log"

# sshd_pid: the PID of our sshd (from the pid file, checked against
# /proc/PID/cmdline so a recycled PID is never taken for it), or nothing.
sshd_pid() {
    local pid=""
    [[ -r "$PIDFILE" ]] || return 0
    pid="$(tr -dc '0-9' <"$PIDFILE" || true)"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    # A zombie (killed, not yet reaped) does not count.
    [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]] || return 0
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "-f $CONF"; then
        echo "$pid"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_answers() {
    # An SSH server speaks first: read its banner.
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1 && head -c 4 <&3" 2>/dev/null | grep -q '^SSH-'
}

write_config() {
    local port="$1" password="no" root_login="prohibit-password"
    if [[ "${SSHD_PASSWORD_AUTH:-0}" == 1 ]]; then
        password="yes"
        root_login="yes"
    fi
    cat >"$CONF" <<EOF
# Written by scripts/services/sshd.sh; rewritten at every start.
Port $port
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $HOST_KEY
PidFile $PIDFILE
AuthorizedKeysFile $AUTH_KEYS
UsePAM no
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication $password
KbdInteractiveAuthentication no
PermitRootLogin $root_login
PermitEmptyPasswords no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
UseDNS no
MaxStartups 100:30:200
MaxSessions 50
LoginGraceTime 30
LogLevel INFO
Subsystem sftp internal-sftp
AcceptEnv LANG LC_*
EOF
}

write_env() {
    local port="$1" pid="$2" fp
    fp="$(ssh-keygen -l -E sha256 -f "$HOST_KEY.pub" | awk '{print $2}')"
    {
        echo "SSHD_PORT=$port"
        echo "SSHD_HOST_KEY_PUB=$HOST_KEY.pub"
        echo "SSHD_HOST_KEY_FINGERPRINT=$fp"
        echo "SSHD_AUTHORIZED_KEYS=$AUTH_KEYS"
        echo "SSHD_PID=$pid"
        echo "SSHD_PASSWORD_AUTH=${SSHD_PASSWORD_AUTH:-0}"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
    cat "$DIR/env"
}

do_start() {
    local pid port attempt deadline
    pid="$(sshd_pid)"
    if [[ -n "$pid" && -r "$DIR/port" ]] && port_answers "$(cat "$DIR/port")"; then
        log "already running (pid $pid, port $(cat "$DIR/port"))"
        write_env "$(cat "$DIR/port")" "$pid"
        return 0
    fi
    [[ -x "$SSHD_BIN" ]] || { log "$SSHD_BIN not found: install openssh-server"; exit 1; }
    if [[ -n "$pid" ]]; then
        do_stop
    fi
    mkdir -p /run/sshd
    chmod 0755 /run/sshd
    if [[ ! -s "$HOST_KEY" ]]; then
        rm -f "$HOST_KEY" "$HOST_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "hvp-test-sshd" -f "$HOST_KEY"
    fi
    touch "$AUTH_KEYS"
    chmod 0600 "$AUTH_KEYS" "$HOST_KEY"
    for attempt in 1 2 3 4 5; do
        if [[ -r "$DIR/port" && $attempt -eq 1 ]]; then
            port="$(cat "$DIR/port")"
        else
            port="$(free_port)"
        fi
        write_config "$port"
        "$SSHD_BIN" -t -f "$CONF" || { log "invalid $CONF"; exit 1; }
        rm -f "$PIDFILE"
        "$SSHD_BIN" -D -e -f "$CONF" </dev/null >>"$LOG" 2>&1 &
        pid=$!
        echo "$pid" >"$PIDFILE"
        disown "$pid" 2>/dev/null || true
        deadline=$((SECONDS + START_TIMEOUT))
        while kill -0 "$pid" 2>/dev/null; do
            if port_answers "$port"; then
                echo "$port" >"$DIR/port"
                log "running (pid $pid, 127.0.0.1:$port)"
                write_env "$port" "$pid"
                return 0
            fi
            if ((SECONDS >= deadline)); then
                break
            fi
            sleep 0.05
        done
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        log "attempt $attempt on port $port failed: $(tail -n 3 "$LOG" | tr '\n' ' ')"
    done
    log "sshd did not start; see $LOG"
    exit 1
}

do_stop() {
    local pid deadline
    pid="$(sshd_pid)"
    if [[ -z "$pid" ]]; then
        rm -f "$PIDFILE"
        return 0
    fi
    log "stopping sshd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.05
    done
    rm -f "$PIDFILE"
}

do_status() {
    local pid port=""
    pid="$(sshd_pid)"
    [[ -r "$DIR/port" ]] && port="$(cat "$DIR/port")"
    if [[ -n "$pid" && -n "$port" ]] && port_answers "$port"; then
        echo "sshd: running (pid $pid, 127.0.0.1:$port)"
        return 0
    fi
    echo "sshd: stopped"
    return 3
}

case "$CMD" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
