#!/usr/bin/env bash
# Start, stop or query the system libvirt daemons (virtlogd + libvirtd).
#
# The machines this project runs on have no systemd and apt never starts
# daemons, so tests and CI start them here, in the background, and stop them
# by PID. Every command is idempotent.
#
# Usage: scripts/services/libvirtd.sh start|stop|restart|status
#
# KVM quirk: when /dev/kvm exists but the user QEMU runs as (qemu.conf `user`,
# default libvirt-qemu) cannot open it (no udev rule giving it to group kvm, as
# on these machines), guests can never use KVM, yet libvirt 9.0's capability
# probe (which runs with CAP_DAC_OVERRIDE) sees KVM. The cached QEMU
# capabilities are then judged stale on EVERY API call and re-probed (~4 s per
# emulator, createXML ~45 s). In that case libvirtd is started in a private
# mount namespace (propagation slave: host mounts still show up inside) where
# /dev/kvm is masked by an empty root-only file, so libvirt consistently sees
# no KVM and offers TCG (`<domain type='qemu'>`) only. That daemon also reads
# a copy of qemu.conf with `namespaces = []` (see start_libvirtd).
# HVP_LIBVIRTD_MASK_KVM=auto (default) | 1 (always mask) | 0 (never mask).
set -euo pipefail

URI="qemu:///system"
KVM_MASK="/run/hvp-libvirtd-kvm-mask"
QEMU_CONF_OVERRIDE="/run/hvp-libvirtd-qemu.conf"
START_TIMEOUT="${LIBVIRTD_START_TIMEOUT:-20}"
STOP_TIMEOUT="${LIBVIRTD_STOP_TIMEOUT:-15}"

log() { printf 'libvirtd.sh: %s\n' "$*" >&2; }

# virsh_answers: true when qemu:///system accepts a connection. (`virsh uri`
# rather than `virsh version`: the latter loads the QEMU capabilities, which
# costs ~4 s per call on a daemon hit by the KVM quirk below.)
virsh_answers() {
    timeout 10 virsh -q -c "$URI" uri >/dev/null 2>&1
}

# pids_of NAME: print the PIDs of the running daemon NAME (pid file first,
# then pgrep), one per line; nothing when it does not run. The pgrep fallback
# matches the exact command line this script starts (`NAME -d`), so a second
# daemon started with other arguments (scripts/services/libvirtd2.sh runs
# `libvirtd -d -p DIR/libvirtd.pid ...`) is never taken for the system one.
pids_of() {
    local name="$1" pidfile="/run/$1.pid" pid=""
    if [[ -r "$pidfile" ]]; then
        pid="$(tr -dc '0-9' <"$pidfile" || true)"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
            && [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]; then
            echo "$pid"
            return 0
        fi
    fi
    pgrep -xf "(/usr/sbin/)?$name -d" || true
}

is_running() { [[ -n "$(pids_of "$1")" ]]; }

# pid_list NAME: the PIDs of NAME on one line, space separated.
pid_list() { pids_of "$1" | paste -sd ' ' -; }

require() {
    local bin
    for bin in virsh virtlogd libvirtd; do
        if ! command -v "$bin" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$bin" ]]; then
            log "$bin not found: install libvirt-daemon-system libvirt-clients"
            exit 1
        fi
    done
}

# shellcheck source=kvm-mask.sh
source "$(dirname "${BASH_SOURCE[0]}")/kvm-mask.sh"

start_libvirtd() {
    if kvm_mask_needed; then
        log "starting libvirtd (/dev/kvm unusable by $(qemu_user): masked, TCG only)"
        : >"$KVM_MASK"
        chmod 0600 "$KVM_MASK"
        # A file mounted under /dev breaks libvirt's per-domain /dev namespace
        # (it recreates preserved /dev mounts as directories), so that
        # daemon runs QEMU without it: namespaces = [].
        {
            sed '/^[[:space:]]*namespaces[[:space:]]*=/d' /etc/libvirt/qemu.conf 2>/dev/null || true
            printf '\n# added by scripts/services/libvirtd.sh (/dev/kvm masked)\nnamespaces = []\n'
        } >"$QEMU_CONF_OVERRIDE"
        chmod 0600 "$QEMU_CONF_OVERRIDE"
        unshare --mount --propagation slave sh -c \
            'mount --bind "$1" /dev/kvm && mount --bind "$2" /etc/libvirt/qemu.conf && exec libvirtd -d' \
            sh "$KVM_MASK" "$QEMU_CONF_OVERRIDE"
    else
        log "starting libvirtd"
        libvirtd -d
    fi
}

do_start() {
    if virsh_answers; then
        log "already running ($URI answers)"
        return 0
    fi
    require
    export PATH="$PATH:/usr/sbin:/sbin"
    if ! is_running virtlogd; then
        log "starting virtlogd"
        virtlogd -d
    fi
    if ! is_running libvirtd; then
        start_libvirtd
    fi
    local deadline=$((SECONDS + START_TIMEOUT))
    until virsh_answers; do
        if ((SECONDS >= deadline)); then
            log "libvirtd did not answer on $URI within ${START_TIMEOUT}s"
            exit 1
        fi
        sleep 0.2
    done
    log "running ($URI answers, libvirtd pid $(pid_list libvirtd))"
}

# stop_daemon NAME: SIGTERM, wait, then SIGKILL whatever is left.
stop_daemon() {
    local name="$1" pids pid deadline
    pids="$(pids_of "$name")"
    if [[ -z "$pids" ]]; then
        return 0
    fi
    log "stopping $name (pid $(echo "$pids" | paste -sd ' ' -))"
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "$name pid $pid ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.2
                break
            fi
            sleep 0.1
        done
    done
    rm -f "/run/$name.pid"
}

do_stop() {
    stop_daemon libvirtd
    stop_daemon virtlogd
    log "stopped"
}

do_status() {
    local d
    for d in virtlogd libvirtd; do
        if is_running "$d"; then
            echo "$d: running (pid $(pid_list "$d"))"
        else
            echo "$d: stopped"
        fi
    done
    if virsh_answers; then
        echo "$URI: answers"
        return 0
    fi
    echo "$URI: not answering"
    return 3
}

case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    *)
        echo "usage: $0 start|stop|restart|status" >&2
        exit 2
        ;;
esac
