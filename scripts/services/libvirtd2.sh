#!/usr/bin/env bash
# Start, stop or query a SECOND libvirtd (+ its own virtlogd): a second "host"
# on this machine, e.g. a migration destination or a remote node for tests.
#
# Usage: scripts/services/libvirtd2.sh start|stop|status DIR
#        scripts/services/libvirtd2.sh set-kvm DIR mask|open|broken
# set-kvm swaps what the running daemon (and the QEMUs it starts from then on) sees as
# /dev/kvm, so tests can force each kind of host (kvm-mask.sh: kvm_device_file).
#
# The daemon runs in its own mount namespace (unshare -m, propagation slave:
# our bind mounts never leak to the host, host mounts still show up inside, so
# /work and /tmp are the host's), where these are bind-mounted over the host's:
#   /etc/libvirt       <- DIR/ns/etc    (copy of the host's, without its
#                                        domains, networks, pools, secrets)
#   /run/libvirt       <- DIR/ns/run    (empty directory tree)
#   /var/lib/libvirt   <- DIR/ns/lib    (empty directory tree)
#   /var/cache/libvirt <- DIR/ns/cache  (copy: reuses the QEMU capability cache)
#   /var/log/libvirt   <- DIR/ns/log    (empty directory tree)
#   /dev/kvm           <- DIR/kvm-mask  (only when libvirtd.sh would mask it too,
#                                        or HVP_LIBVIRTD_MASK_KVM=1; with
#                                        HVP_LIBVIRTD_MASK_KVM=open an openable
#                                        KVM device: see kvm-mask.sh)
# So a path such as /var/lib/libvirt/images/x or the serial log
# /var/log/libvirt/qemu/NAME-serial.log names a DIFFERENT file for this daemon:
# on the host it is DIR/ns/lib/images/x, DIR/ns/log/qemu/NAME-serial.log.
#
# Config (rewritten at every start from the host's files plus overrides):
#   libvirtd.conf host_uuid (generated once, kept in DIR/host_uuid),
#     unix_sock_dir="DIR/run", auth none on the UNIX sockets (0770, root),
#     log_outputs to DIR/log/libvirtd.log
#   qemu.conf stdio_handler="file", cgroup_controllers=[], namespaces=[],
#     migration_port_min/max 49252-49300 (the host daemon's default is
#     49152-49215), VNC ports 5950-5999. (libvirt refuses 127.0.0.1 for
#     migration_address/migration_host: "must not be the address of the local
#     machine"; pass VIR_MIGRATE_PARAM_LISTEN_ADDRESS=127.0.0.1 per migration.)
# Pid files: DIR/libvirtd.pid, DIR/virtlogd.pid. Logs: DIR/log/.
# After a start, DIR/env holds (and stdout prints):
#   LIBVIRTD2_SOCKET=DIR/run/libvirt-sock
#   LIBVIRTD2_URI=qemu+unix:///system?socket=DIR/run/libvirt-sock
#   LIBVIRTD2_HOST_UUID=...  LIBVIRTD2_DIR=DIR  LIBVIRTD2_PID=...
# Keep DIR short (e.g. mktemp -d /tmp/hvpn2-XXXX): UNIX socket paths are
# limited to 107 bytes.
#
# stop: destroys the daemon's running guests, stops libvirtd by PID, then ends
# every process left in a namespace of this DIR (its QEMUs, virtlogd, ...):
# those are found by /proc/PID/root/run/libvirt being DIR/ns/run, never by
# name. DIR (and so the defined domains, pools, host UUID) is kept.
# HVP_LIBVIRTD_MASK_KVM=auto (default) | 1 | 0, as in libvirtd.sh.
set -euo pipefail

START_TIMEOUT="${LIBVIRTD_START_TIMEOUT:-30}"
STOP_TIMEOUT="${LIBVIRTD_STOP_TIMEOUT:-15}"
MIGRATION_PORT_MIN="${LIBVIRTD2_MIGRATION_PORT_MIN:-49252}"
MIGRATION_PORT_MAX="${LIBVIRTD2_MIGRATION_PORT_MAX:-49300}"
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

log() { printf 'libvirtd2.sh: %s\n' "$*" >&2; }

usage() {
    echo "usage: $0 start|stop|status DIR | set-kvm DIR mask|open|broken" >&2
    exit 2
}

[[ $# -eq 2 || ( $# -eq 3 && "$1" == set-kvm ) ]] || usage
CMD="$1"
if [[ ! -d "$2" ]]; then
    case "$CMD" in
        start) mkdir -p "$2" ;;
        stop) exit 0 ;;
        status) echo "libvirtd2: stopped (no $2)"; exit 3 ;;
        *) usage ;;
    esac
fi
DIR="$(cd "$2" && pwd -P)"
NS="$DIR/ns"
SOCK_DIR="$DIR/run"
SOCKET="$SOCK_DIR/libvirt-sock"
URI="qemu+unix:///system?socket=$SOCKET"
LOG_DIR="$DIR/log"
LIBVIRTD_PID="$DIR/libvirtd.pid"
VIRTLOGD_PID="$DIR/virtlogd.pid"
KVM_MASK="$DIR/kvm-mask"

if (( ${#SOCK_DIR} + 20 > 107 )); then
    log "DIR too long for UNIX sockets ($SOCK_DIR/libvirt-admin-sock > 107 bytes): use e.g. mktemp -d /tmp/hvpn2-XXXX"
    exit 2
fi

virsh_answers() {
    timeout 10 virsh -q -c "$URI" uri >/dev/null 2>&1
}

# pid_from FILE NAME: the PID in FILE if it is a live process called NAME
# whose command line names DIR (so a recycled PID is never taken for ours).
pid_from() {
    local file="$1" name="$2" pid=""
    [[ -r "$file" ]] || return 0
    pid="$(tr -dc '0-9' <"$file" || true)"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    # A zombie (killed, not yet reaped) does not count.
    [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]] || return 0
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]] || return 0
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/" || return 0
    echo "$pid"
}

# ns_pids: every process whose /run/libvirt is our DIR/ns/run, i.e. that runs
# in a mount namespace made by this script for DIR (daemons, QEMU, dnsmasq).
ns_pids() {
    local want p got
    want="$(stat -L -c '%d:%i' "$NS/run" 2>/dev/null)" || return 0
    for p in /proc/[0-9]*; do
        got="$(stat -L -c '%d:%i' "$p/root/run/libvirt" 2>/dev/null)" || continue
        [[ "$got" == "$want" ]] && echo "${p#/proc/}"
    done
    return 0
}

# shellcheck source=kvm-mask.sh
source "$(dirname "${BASH_SOURCE[0]}")/kvm-mask.sh"

# copy_tree SRC DST: the directories of SRC (same owner and mode), no files.
copy_tree() {
    local src="$1" dst="$2" rel
    mkdir -p "$dst"
    [[ -d "$src" ]] || return 0
    chown --reference="$src" "$dst"
    chmod --reference="$src" "$dst"
    while IFS= read -r -d '' rel; do
        rel="${rel#./}"
        [[ -z "$rel" || "$rel" == . ]] && continue
        mkdir -p "$dst/$rel"
        chown --reference="$src/$rel" "$dst/$rel"
        chmod --reference="$src/$rel" "$dst/$rel"
    done < <(cd "$src" && find . -mindepth 1 -type d -print0)
}

# populate: lay out DIR/ns once (kept across restarts: defined domains etc.).
populate() {
    if [[ -e "$NS/.populated" ]]; then
        return 0
    fi
    log "creating the private libvirt directories in $NS"
    rm -rf "$NS"
    mkdir -p "$NS"
    # /etc/libvirt: the host's config, without the objects the host defined.
    cp -a /etc/libvirt "$NS/etc"
    rm -rf "$NS/etc/qemu" "$NS/etc/storage" "$NS/etc/secrets" "$NS/etc/lxc" \
        "$NS/etc/libxl" "$NS/etc/ch" "$NS/etc/bhyve"
    mkdir -p "$NS/etc/qemu/networks/autostart" "$NS/etc/qemu/autostart" \
        "$NS/etc/storage/autostart" "$NS/etc/secrets"
    chmod 0700 "$NS/etc/secrets"
    copy_tree /run/libvirt "$NS/run"
    copy_tree /var/lib/libvirt "$NS/lib"
    copy_tree /var/log/libvirt "$NS/log"
    mkdir -p "$NS/log/qemu" "$NS/lib/qemu" "$NS/lib/images" "$NS/run/qemu"
    # The capability cache is worth copying: it saves a ~4 s QEMU probe (libvirt
    # re-validates it, so a stale copy only costs that probe).
    if [[ -d /var/cache/libvirt ]]; then
        cp -a /var/cache/libvirt "$NS/cache"
    else
        mkdir -p "$NS/cache/qemu"
    fi
    : >"$NS/.populated"
}

# conf_without FILE KEY...: FILE without the settings KEY..., on stdout.
conf_without() {
    local file="$1" re
    shift
    re="$(printf '%s|' "$@")"
    re="${re%|}"
    if [[ -r "$file" ]]; then
        grep -Ev "^[[:space:]]*($re)[[:space:]]*=" "$file" || true
    fi
}

write_configs() {
    local uuid
    if [[ ! -s "$DIR/host_uuid" ]]; then
        cat /proc/sys/kernel/random/uuid >"$DIR/host_uuid"
    fi
    uuid="$(tr -dc '0-9a-f-' <"$DIR/host_uuid")"
    {
        conf_without /etc/libvirt/libvirtd.conf host_uuid host_uuid_source unix_sock_dir \
            unix_sock_group unix_sock_ro_perms unix_sock_rw_perms unix_sock_admin_perms \
            auth_unix_ro auth_unix_rw listen_tls listen_tcp log_outputs log_filters
        cat <<EOF

# ---- added by scripts/services/libvirtd2.sh (second daemon in $DIR) ----
host_uuid = "$uuid"
unix_sock_dir = "$SOCK_DIR"
unix_sock_group = "root"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0770"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
listen_tls = 0
listen_tcp = 0
log_filters = "3:remote 4:event 3:util.json 3:rpc"
log_outputs = "3:file:$LOG_DIR/libvirtd.log"
EOF
    } >"$NS/etc/libvirtd.conf"
    {
        conf_without /etc/libvirt/qemu.conf stdio_handler cgroup_controllers namespaces \
            migration_port_min migration_port_max \
            remote_display_port_min remote_display_port_max \
            remote_websocket_port_min remote_websocket_port_max
        cat <<EOF

# ---- added by scripts/services/libvirtd2.sh (second daemon in $DIR) ----
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
migration_port_min = $MIGRATION_PORT_MIN
migration_port_max = $MIGRATION_PORT_MAX
remote_display_port_min = 5950
remote_display_port_max = 5999
remote_websocket_port_min = 5750
remote_websocket_port_max = 5799
EOF
    } >"$NS/etc/qemu.conf"
    {
        conf_without /etc/libvirt/virtlogd.conf log_outputs
        printf '\n# added by scripts/services/libvirtd2.sh\nlog_outputs = "3:file:%s/virtlogd.log"\n' "$LOG_DIR"
    } >"$NS/etc/virtlogd.conf"
    chmod 0600 "$NS/etc/libvirtd.conf" "$NS/etc/qemu.conf" "$NS/etc/virtlogd.conf"
}

write_env() {
    local pid="$1"
    {
        echo "LIBVIRTD2_SOCKET=$SOCKET"
        echo "LIBVIRTD2_URI=$URI"
        echo "LIBVIRTD2_HOST_UUID=$(tr -dc '0-9a-f-' <"$DIR/host_uuid")"
        echo "LIBVIRTD2_DIR=$DIR"
        echo "LIBVIRTD2_PID=$pid"
    } >"$DIR/env.tmp"
    mv "$DIR/env.tmp" "$DIR/env"
    cat "$DIR/env"
}

do_start() {
    local pid vpid mask="" start_virtlogd=1 deadline
    pid="$(pid_from "$LIBVIRTD_PID" libvirtd)"
    if [[ -n "$pid" ]] && virsh_answers; then
        log "already running (pid $pid, $URI answers)"
        write_env "$pid"
        return 0
    fi
    for bin in virsh virtlogd libvirtd unshare; do
        command -v "$bin" >/dev/null 2>&1 || { log "$bin not found"; exit 1; }
    done
    if [[ -z "$pid" ]]; then
        mkdir -p "$SOCK_DIR" "$LOG_DIR"
        chmod 0711 "$DIR"
        populate
        write_configs
        if [[ "${HVP_LIBVIRTD_MASK_KVM:-auto}" == open ]]; then
            kvm_device_file open "$KVM_MASK"
            mask="$KVM_MASK"
        elif kvm_mask_needed; then
            kvm_device_file mask "$KVM_MASK"
            mask="$KVM_MASK"
        fi
        vpid="$(pid_from "$VIRTLOGD_PID" virtlogd)"
        [[ -n "$vpid" ]] && start_virtlogd=0
        # A daemon killed with SIGKILL leaves its sockets behind.
        rm -f "$SOCK_DIR"/libvirt-sock "$SOCK_DIR"/libvirt-sock-ro "$SOCK_DIR"/libvirt-admin-sock
        log "starting libvirtd in a private mount namespace (kvm mask: ${mask:-no})"
        env -i PATH="/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8 \
            unshare --mount --propagation slave -- sh -c '
                set -e
                ns="$1"; mask="$2"; start_virtlogd="$3"; vpidf="$4"; lpidf="$5"
                mount --bind "$ns/etc" /etc/libvirt
                mount --bind "$ns/run" /run/libvirt
                mount --bind "$ns/lib" /var/lib/libvirt
                mount --bind "$ns/cache" /var/cache/libvirt
                mount --bind "$ns/log" /var/log/libvirt
                if [ -n "$mask" ] && [ -e /dev/kvm ]; then mount --bind "$mask" /dev/kvm; fi
                if [ "$start_virtlogd" = 1 ]; then
                    virtlogd -d -p "$vpidf" -f /etc/libvirt/virtlogd.conf
                fi
                exec libvirtd -d -p "$lpidf" -f /etc/libvirt/libvirtd.conf
            ' sh "$NS" "$mask" "$start_virtlogd" "$VIRTLOGD_PID" "$LIBVIRTD_PID" \
            </dev/null >>"$LOG_DIR/start.log" 2>&1 || {
                log "unshare/libvirtd failed: $(tail -n 5 "$LOG_DIR/start.log" | tr '\n' ' ')"
                exit 1
            }
    else
        log "libvirtd pid $pid exists but does not answer yet; waiting"
    fi
    deadline=$((SECONDS + START_TIMEOUT))
    local grace=$((SECONDS + 2))
    until virsh_answers; do
        if ((SECONDS >= grace)) && [[ -z "$(pid_from "$LIBVIRTD_PID" libvirtd)" ]]; then
            log "libvirtd exited during start-up: $(grep -E ': error : ' "$LOG_DIR/libvirtd.log" | tail -n 3 | tr '\n' ' ')"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "libvirtd did not answer on $URI within ${START_TIMEOUT}s; see $LOG_DIR"
            exit 1
        fi
        sleep 0.1
    done
    pid="$(pid_from "$LIBVIRTD_PID" libvirtd)"
    log "running (libvirtd pid $pid, $URI answers)"
    write_env "$pid"
}

# term_wait PID...: SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL.
term_wait() {
    local pid deadline
    [[ $# -gt 0 ]] || return 0
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then
                log "pid $pid ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 0.2
                break
            fi
            sleep 0.05
        done
    done
}

do_stop() {
    local pid dom left vpid
    pid="$(pid_from "$LIBVIRTD_PID" libvirtd)"
    if [[ -n "$pid" ]] && virsh_answers; then
        # Destroy guests through libvirt, so it cleans up their state.
        while IFS= read -r dom; do
            [[ -n "$dom" ]] || continue
            timeout 20 virsh -q -c "$URI" destroy "$dom" >/dev/null 2>&1 || true
        done < <(timeout 10 virsh -q -c "$URI" list --name 2>/dev/null || true)
    fi
    if [[ -n "$pid" ]]; then
        log "stopping libvirtd (pid $pid)"
        term_wait "$pid"
    fi
    vpid="$(pid_from "$VIRTLOGD_PID" virtlogd)"
    # Whatever is left in our namespaces: QEMU (SIGTERM then SIGKILL), dnsmasq...
    mapfile -t left < <(ns_pids | grep -vx "${vpid:-x}" || true)
    if ((${#left[@]})); then
        log "ending processes left in the namespace: ${left[*]}"
        term_wait "${left[@]}"
    fi
    if [[ -n "$vpid" ]]; then
        log "stopping virtlogd (pid $vpid)"
        term_wait "$vpid"
    fi
    mapfile -t left < <(ns_pids)
    if ((${#left[@]})); then
        kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    rm -f "$LIBVIRTD_PID" "$VIRTLOGD_PID"
    log "stopped"
}

do_status() {
    local pid vpid
    pid="$(pid_from "$LIBVIRTD_PID" libvirtd)"
    vpid="$(pid_from "$VIRTLOGD_PID" virtlogd)"
    if [[ -n "$vpid" ]]; then echo "virtlogd: running (pid $vpid)"; else echo "virtlogd: stopped"; fi
    if [[ -n "$pid" ]]; then echo "libvirtd: running (pid $pid)"; else echo "libvirtd: stopped"; fi
    if virsh_answers; then
        echo "$URI: answers"
        return 0
    fi
    echo "$URI: not answering"
    return 3
}

# set_kvm KIND: bind a new /dev/kvm stand-in inside the running daemon's namespace.
set_kvm() {
    local kind="$1" pid file
    pid="$(pid_from "$LIBVIRTD_PID" libvirtd)"
    [[ -n "$pid" ]] || { log "libvirtd is not running"; exit 1; }
    file="$DIR/kvm-$kind"
    kvm_device_file "$kind" "$file"
    nsenter -t "$pid" -m mount --bind "$file" /dev/kvm
    log "/dev/kvm of libvirtd $pid is now: $kind"
}

case "$CMD" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    set-kvm) set_kvm "$3" ;;
    *) usage ;;
esac
