#!/usr/bin/env bash
# Start, stop or query a throw-away single-node Ceph cluster (for the RBD tests).
#
# Everything lives under DIR: ceph.conf, keyrings, mon/osd/mgr data, logs, pid
# files and admin sockets. One monitor (mon.a), one memstore OSD (osd.0, data in
# RAM, ~1 GiB device), one manager (mgr.x), all on 127.0.0.1 with free ports,
# cephx required. The pool `rbd` (size 1) is created and initialised, and the
# user client.libvirt gets `mon 'profile rbd' osd 'profile rbd pool=rbd'`.
#
# The Debian packages (installed by the Makefile, not here):
#   ceph-mon ceph-osd ceph-mgr ceph-common python3-rbd python3-rados
#   libvirt-daemon-driver-storage-rbd qemu-block-extra
# NB: libvirtd loads its storage back ends at start-up: a libvirtd started before
# libvirt-daemon-driver-storage-rbd was installed refuses rbd pools until restarted.
#
# Usage: scripts/services/ceph.sh start|stop|status DIR
#
#   start   bootstrap and start the cluster; a no-op when the cluster in DIR
#           already runs and answers. Writes DIR/env (shell syntax):
#             CEPH_CONF CEPH_MON_HOST CEPH_MON_PORT (v1) CEPH_MON_PORT_V2
#             CEPH_FSID CEPH_ADMIN_KEYRING CEPH_LIBVIRT_KEY (base64 cephx key)
#           Waits (CEPH_START_TIMEOUT, default 60 s) until the OSD is up/in and
#           an `rbd create`/`rbd rm` round trip works.
#   stop    stop osd, mgr, then mon by PID (pid files under DIR/run) and wait
#           for them to exit; idempotent. DIR (logs included) is left in place.
#   status  exit 0 when the three daemons of DIR run and the monitor answers,
#           3 otherwise.
#
# Daemons are never shared between DIRs, so several clusters can run at once.
set -euo pipefail

START_TIMEOUT="${CEPH_START_TIMEOUT:-60}"
STOP_TIMEOUT="${CEPH_STOP_TIMEOUT:-20}"
OSD_BYTES="${CEPH_MEMSTORE_BYTES:-1073741824}"   # 1 GiB memstore device
export PATH="$PATH:/usr/sbin:/sbin:/usr/bin:/bin"

log() { printf 'ceph.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}

[[ $# -eq 2 ]] || usage
CMD="$1"
[[ -n "$2" ]] || usage
DIR="$(realpath -m -- "$2")"
CONF="$DIR/ceph.conf"
ENV_FILE="$DIR/env"
ADMIN_KEYRING="$DIR/ceph.client.admin.keyring"
LIBVIRT_KEYRING="$DIR/ceph.client.libvirt.keyring"
RUN="$DIR/run"
LOGDIR="$DIR/log"
# Daemons in stop order.
DAEMONS=(osd.0 mgr.x mon.a)

# ---------------------------------------------------------------- helpers

require() {
    local bin
    for bin in ceph ceph-mon ceph-osd ceph-mgr ceph-authtool monmaptool rbd python3; do
        command -v "$bin" >/dev/null 2>&1 \
            || die "$bin not found: install ceph-mon ceph-osd ceph-mgr ceph-common"
    done
}

# c ARGS...: the ceph CLI against this cluster (admin), bounded in time.
c() {
    timeout 30 ceph --conf "$CONF" --connect-timeout 10 "$@"
}

# rbdc ARGS...: the rbd CLI against this cluster (admin), bounded in time.
rbdc() {
    timeout 30 rbd --conf "$CONF" --client_mount_timeout 10 --rados_osd_op_timeout 20 "$@"
}

# free_ports N: N distinct free TCP ports on 127.0.0.1, one per line.
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# pid_of NAME: the PID of daemon NAME (osd.0, mgr.x, mon.a) of THIS cluster,
# nothing when it does not run. The PID comes from DIR/run/NAME.pid and is
# believed only when that process is a ceph daemon started with our ceph.conf.
pid_of() {
    local name="$1" pidfile="$RUN/$1.pid" pid cmdline
    [[ -r "$pidfile" ]] || return 0
    pid="$(tr -dc '0-9' <"$pidfile" || true)"
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    if [[ "$cmdline" == *ceph-* && "$cmdline" == *"$CONF"* ]]; then
        echo "$pid"
    fi
}

# answers: true when the monitor of this cluster answers an authenticated call.
answers() {
    [[ -r "$CONF" && -r "$ADMIN_KEYRING" ]] || return 1
    timeout 15 ceph --conf "$CONF" --connect-timeout 5 health >/dev/null 2>&1
}

# healthy_running: every daemon runs, the mon answers and the OSD is up.
healthy_running() {
    local d n
    [[ -r "$ENV_FILE" ]] || return 1
    for d in "${DAEMONS[@]}"; do
        [[ -n "$(pid_of "$d")" ]] || return 1
    done
    answers || return 1
    n="$(timeout 15 ceph --conf "$CONF" --connect-timeout 5 osd stat -f json 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get("num_up_osds", 0))' \
        2>/dev/null || echo 0)"
    [[ "$n" == 1 ]]
}

# start_daemon NAME BINARY ID: start a ceph daemon (it daemonizes itself and
# writes DIR/run/NAME.pid) and wait for its pid file.
start_daemon() {
    local name="$1" bin="$2" id="$3" deadline pid
    log "starting $name"
    "$bin" --conf "$CONF" -i "$id" </dev/null >>"$LOGDIR/$name.stdout" 2>&1 \
        || die "$bin -i $id failed to start: see $LOGDIR/ceph-$name.log and $LOGDIR/$name.stdout"
    deadline=$((SECONDS + 15))
    until pid="$(pid_of "$name")" && [[ -n "$pid" ]]; do
        ((SECONDS < deadline)) || die "$name did not write $RUN/$name.pid: see $LOGDIR/ceph-$name.log"
        sleep 0.1
    done
}

# stop_daemon NAME: SIGTERM, wait, then SIGKILL.
stop_daemon() {
    local name="$1" pid deadline
    pid="$(pid_of "$name")"
    if [[ -z "$pid" ]]; then
        rm -f "$RUN/$name.pid"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            break
        fi
        sleep 0.1
    done
    rm -f "$RUN/$name.pid"
}

# wait_until SECONDS WHAT CMD...: retry CMD until it succeeds or time is up.
wait_until() {
    local limit="$1" what="$2" deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

osd_up_in() {
    c osd dump -f json | python3 -c '
import json, sys
osds = json.load(sys.stdin)["osds"]
sys.exit(0 if any(o["osd"] == 0 and o["up"] == 1 and o["in"] == 1 for o in osds) else 1)'
}

mgr_available() {
    c mgr stat -f json | python3 -c '
import json, sys
sys.exit(0 if json.load(sys.stdin).get("available") else 1)'
}

rbd_round_trip() {
    local img="hvp-probe-$$-$RANDOM"
    rbdc create --size 4M "rbd/$img" && rbdc rm --no-progress "rbd/$img"
}

# quiet CMD...: run CMD, show its output only when it fails.
quiet() {
    local out
    if ! out="$("$@" 2>&1)"; then
        log "failed: $*"
        printf '%s\n' "$out" >&2
        return 1
    fi
}

write_conf() {
    local fsid="$1" port_v1="$2" port_v2="$3"
    cat >"$CONF" <<EOF
# Written by scripts/services/ceph.sh: a throw-away single-node test cluster.
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$port_v2,v1:127.0.0.1:$port_v1]
public addr = 127.0.0.1
public network = 127.0.0.0/8
cluster network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false

auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false

run dir = $RUN
crash dir = $DIR/crash
log file = $LOGDIR/\$cluster-\$name.log
mon cluster log file = $LOGDIR/\$cluster.log
log to stderr = false
err to stderr = true
pid file = $RUN/\$name.pid

osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
# One monitor, nothing to batch: commit map changes sooner (default 1 s).
paxos propose interval = 0.1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon data avail warn = 2
mon data avail crit = 1
# Read by the monitor when it creates the first MgrMap: no restful/iostat/nfs.
mgr initial modules =

[mon]
mon data = $DIR/mon/\$cluster-\$id
admin socket = $RUN/\$name.asok
mon memory target = 268435456

[osd]
osd data = $DIR/osd/\$cluster-\$id
admin socket = $RUN/\$name.asok
osd objectstore = memstore
memstore device bytes = $OSD_BYTES
osd memory target = 268435456
osd op num shards = 1
osd op num threads per shard = 2

[mgr]
mgr data = $DIR/mgr/\$cluster-\$id
admin socket = $RUN/\$name.asok

[client]
keyring = $DIR/\$cluster.\$name.keyring
EOF
}

write_env() {
    local fsid="$1" port_v1="$2" port_v2="$3" key="$4" tmp="$ENV_FILE.tmp"
    {
        printf 'CEPH_CONF=%q\n' "$CONF"
        printf 'CEPH_MON_HOST=%q\n' 127.0.0.1
        printf 'CEPH_MON_PORT=%q\n' "$port_v1"
        printf 'CEPH_MON_PORT_V2=%q\n' "$port_v2"
        printf 'CEPH_FSID=%q\n' "$fsid"
        printf 'CEPH_ADMIN_KEYRING=%q\n' "$ADMIN_KEYRING"
        printf 'CEPH_LIBVIRT_KEY=%q\n' "$key"
    } >"$tmp"
    mv -f "$tmp" "$ENV_FILE"
}

# wipe: remove what a previous (stopped) cluster left in DIR. Memstore keeps
# data in RAM, so a stopped cluster is never resumed: it is bootstrapped anew.
wipe() {
    rm -rf -- "$DIR/mon" "$DIR/osd" "$DIR/mgr" "$DIR/run" "$DIR/crash" "$DIR/tmp" \
        "$LOGDIR" "$CONF" "$ENV_FILE" "$ENV_FILE.tmp" "$ADMIN_KEYRING" "$LIBVIRT_KEYRING"
}

# ---------------------------------------------------------------- commands

do_start() {
    local t0=$SECONDS
    require
    if healthy_running; then
        log "already running ($DIR answers)"
        return 0
    fi
    # Whatever is left (a half-started or stopped cluster) goes.
    do_stop
    wipe
    # A failed start leaves no daemon behind (DIR/log stays for the post-mortem).
    trap 'rc=$?; if ((rc)); then log "start failed: stopping what was started"; do_stop; fi' EXIT
    mkdir -p "$DIR" "$DIR/mon/ceph-a" "$DIR/osd/ceph-0" "$DIR/mgr/ceph-x" "$RUN" \
        "$DIR/crash" "$DIR/tmp" "$LOGDIR"
    if ((${#RUN} + 16 > 107)); then
        log "warning: $RUN is long: admin socket paths may exceed the 107-byte UNIX limit"
    fi

    local fsid port_v1 port_v2 ports
    fsid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    ports="$(free_ports 2)"
    port_v1="$(sed -n 1p <<<"$ports")"
    port_v2="$(sed -n 2p <<<"$ports")"
    write_conf "$fsid" "$port_v1" "$port_v2"

    # Monitor: keyrings, monmap, mkfs.
    log "bootstrapping cluster $fsid in $DIR (mon v2 $port_v2, v1 $port_v1)"
    local monkr="$DIR/tmp/mon.keyring"
    ceph-authtool --create-keyring "$monkr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$ADMIN_KEYRING" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    chmod 0600 "$ADMIN_KEYRING"
    ceph-authtool "$monkr" --import-keyring "$ADMIN_KEYRING" >/dev/null
    monmaptool --create --fsid "$fsid" \
        --addv a "[v2:127.0.0.1:$port_v2,v1:127.0.0.1:$port_v1]" \
        "$DIR/tmp/monmap" >/dev/null
    ceph-mon --conf "$CONF" --mkfs -i a --monmap "$DIR/tmp/monmap" --keyring "$monkr" \
        >>"$LOGDIR/mon.a.stdout" 2>&1 \
        || die "ceph-mon --mkfs failed: see $LOGDIR/mon.a.stdout"
    start_daemon mon.a ceph-mon a
    wait_until 20 "the monitor to answer" answers || die "mon.a does not answer: see $LOGDIR/ceph-mon.a.log"

    # Keys for the manager and the libvirt user, pool rbd: none of this needs
    # the OSD, so it is done while the other daemons start.
    quiet c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
        -o "$DIR/mgr/ceph-x/keyring"
    # No device health scraping (smartctl) on a test cluster. Manager module
    # options live in the monitor's config database, not in ceph.conf; --force
    # because the monitor learns them only from a running manager.
    quiet c config set mgr mgr/devicehealth/enable_monitoring false --force
    # The manager loads its Python modules (~2 s): start it in the background.
    start_daemon mgr.x ceph-mgr x &
    local mgr_job=$!
    local key
    key="$(c auth get-or-create-key client.libvirt mon 'profile rbd' osd 'profile rbd pool=rbd')"
    [[ -n "$key" ]] || die "no key for client.libvirt"
    printf '[client.libvirt]\n\tkey = %s\n' "$key" >"$LIBVIRT_KEYRING"
    chmod 0600 "$LIBVIRT_KEYRING"
    quiet c osd pool create rbd 8 8 replicated

    # OSD: key, id, mkfs (memstore), start.
    local osd_uuid osd_key osd_id
    osd_uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    osd_key="$(ceph-authtool --gen-print-key)"
    printf '[osd.0]\n\tkey = %s\n' "$osd_key" >"$DIR/osd/ceph-0/keyring"
    osd_id="$(printf '{"cephx_secret": "%s"}' "$osd_key" | c osd new "$osd_uuid" -i -)"
    [[ "$osd_id" == 0 ]] || die "ceph osd new gave id '$osd_id', expected 0"
    ceph-osd --conf "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
        >>"$LOGDIR/osd.0.stdout" 2>&1 \
        || die "ceph-osd --mkfs failed: see $LOGDIR/osd.0.stdout and $LOGDIR/ceph-osd.0.log"
    start_daemon osd.0 ceph-osd 0
    wait "$mgr_job" || die "ceph-mgr did not start: see $LOGDIR/ceph-mgr.x.log"

    local left=$((START_TIMEOUT - (SECONDS - t0)))
    wait_until $((left > 5 ? left : 5)) "osd.0 up and in" osd_up_in \
        || die "osd.0 is not up/in: see $LOGDIR/ceph-osd.0.log"
    # Needs an active PG (writes the pool's rbd_info object).
    quiet rbdc pool init rbd

    left=$((START_TIMEOUT - (SECONDS - t0)))
    wait_until $((left > 5 ? left : 5)) "an rbd create/rm round trip" rbd_round_trip \
        || die "the rbd pool is not usable: see $LOGDIR"

    # Pool statistics (libvirt's pool refresh) come from the manager.
    left=$((START_TIMEOUT - (SECONDS - t0)))
    wait_until $((left > 5 ? left : 5)) "an active mgr" mgr_available \
        || die "no active mgr: see $LOGDIR/ceph-mgr.x.log"

    write_env "$fsid" "$port_v1" "$port_v2" "$key"
    rm -rf -- "$DIR/tmp"
    trap - EXIT
    log "running in $((SECONDS - t0))s: $(c health 2>/dev/null || echo 'health unknown')"
}

do_stop() {
    local d
    for d in "${DAEMONS[@]}"; do
        stop_daemon "$d"
    done
}

do_status() {
    local d pid missing=0
    for d in mon.a mgr.x osd.0; do
        pid="$(pid_of "$d")"
        if [[ -n "$pid" ]]; then
            echo "$d: running (pid $pid)"
        else
            echo "$d: stopped"
            missing=1
        fi
    done
    if ((missing == 0)) && answers; then
        c health 2>/dev/null || true
        return 0
    fi
    echo "cluster in $DIR: not answering (or a daemon is down)"
    return 3
}

case "$CMD" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) usage ;;
esac
