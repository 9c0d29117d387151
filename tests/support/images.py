"""Test OS-template disk images: a real Debian 12 with cloud-init, and a fast busybox one.

Both are bootable qcow2 disks (MBR, one ext4 partition at 1 MiB, GRUB i386-pc, serial
console ``ttyS0,115200n8``, ``net.ifnames=0``), built without loop devices and configured
at boot from a NoCloud seed: an ISO 9660 volume labelled ``cidata`` holding ``meta-data``,
``user-data`` and ``network-config`` (see :func:`nocloud_seed`) attached as a CD-ROM.

* :func:`debian_image` — mmdebstrap (minbase) of bookworm with systemd, real cloud-init
  22.4 (``datasource_list: [ NoCloud, None ]``), openssh-server, ifupdown, sudo; default
  user ``debian`` (cloud-init's, passwordless sudo); ~1-3 min to build, 80-110 s to SSH.
* :func:`fast_image` — busybox + dropbear + the Debian kernel: its init applies the seed
  itself (what it supports: :data:`FAST_FEATURES`) and is on SSH within seconds under TCG.

Builds are cached in ``cache_dir`` under a directory named by a hash of the recipe
(package lists, scripts, configs, sizes, the host's mirror list and the host binaries
copied in), written under an exclusive file lock into a temporary directory that is
renamed into place when complete, so a killed build never leaves a broken cache and
parallel workers build once. Each image directory also holds ``hvp-hello_1.0_all.deb``
(:data:`LOCAL_DEB_COMMAND`, see :class:`TemplateImage`) for "install a package from a local
file" tests: upload it over SFTP, then ``dpkg -i`` it (``sudo dpkg -i`` as ``debian``).

Host requirements (Debian 12, root): ``mmdebstrap grub-pc-bin fdisk e2fsprogs qemu-utils
busybox-static dropbear-bin openssh-sftp-server`` and apt lists (the kernel of the fast
image comes from ``apt-get download``).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.guest import (
    ADDR_PREFIX,
    NET_ERROR_PREFIX,
    NET_READY_MARKER,
    POWEROFF_MARKER,
    UDHCPC_SCRIPT,
    NewcWriter,
    resolve_kernel_package,
)

SEED_APPLIED_PREFIX = "HVP-SEED-APPLIED"  # "HVP-SEED-APPLIED hostname=<name>"
SEED_ERROR_PREFIX = "HVP-SEED-ERROR"
SSH_READY_MARKER = "HVP-SSH-READY"
HOST_KEYS_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"  # same block as cloud-init prints
HOST_KEYS_END = "-----END SSH HOST KEY KEYS-----"
LOCAL_DEB_NAME = "hvp-hello_1.0_all.deb"
LOCAL_DEB_COMMAND = "hvp-hello"  # installed by the .deb; prints LOCAL_DEB_OUTPUT
LOCAL_DEB_OUTPUT = "HVP-HELLO 1.0"

#: What the fast image's init applies from a NoCloud seed (everything else is ignored).
FAST_FEATURES: tuple[str, ...] = (
    "meta-data: instance-id (per-instance steps run once per id), local-hostname",
    "user-data '#cloud-config' (any YAML layout, e.g. yaml.safe_dump, JSON, anchors): "
    "fqdn/hostname (over local-hostname; short name set, fqdn in /etc/hosts), "
    "preserve_hostname",
    "users: 'default' skipped (root is the default user); entries named root or others "
    "(created, home /home/NAME, shell if present): ssh_authorized_keys, hashed_passwd, "
    "passwd, plain_text_passwd",
    "top-level ssh_authorized_keys (root), password (root), ssh_pwauth (dropbear password "
    "login; off by default)",
    "chpasswd: list (string of user:password lines or list of them; crypt hashes kept) and "
    "users [{name, password, type: text|hash}]",
    "ssh_keys: {rsa,ecdsa,ed25519}_private (+_public), converted with dropbearconvert; "
    "otherwise an ed25519 host key is generated once; keys printed between "
    "'-----BEGIN/END SSH HOST KEY KEYS-----'",
    "write_files: path, content, encoding (b64, gzip, gz+b64), permissions (octal string "
    "or integer), owner, append, defer",
    "bootcmd (every boot) and runcmd (once per instance): lists of strings (sh -c) or argv "
    "lists; output in /var/log/cloud-init-output.log and on the console",
    "user-data that is a '#!' script: run once per instance after runcmd",
    "a seed's hvp-configure (an OS template's config: script): run once per instance "
    "with HVP_SEED set to the seed's files, after runcmd and before SSH starts",
    "network-config v2 (top-level or under 'network:'): ethernets matched by "
    "match.macaddress or match.name (else the key), set-name, mtu, dhcp4 (udhcpc), "
    "addresses, gateway4, gateway6, routes (to/via/metric), nameservers (addresses, "
    "search), accept-ra; no network-config: DHCP on the first NIC",
)

DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("systemd-sysv", "udev", "dbus", "linux-image-amd64", "cloud-init",
                   "openssh-server", "ifupdown", "iproute2", "sudo", "e2fsprogs", "netbase")
DEBIAN_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_DISK_MIB = 2048
DEBIAN_MIN_MEMORY_MIB = 512
DEBIAN_DEFAULT_USER = "debian"
FAST_DISK_MIB = 128
FAST_MIN_MEMORY_MIB = 128
KERNEL_CMDLINE = "console=tty0 console=ttyS0,115200n8 net.ifnames=0"

GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid", "serial", "terminal")
PART_OFFSET = 1024 * 1024  # the partition starts at sector 2048
# `search.fs_uuid`, not `search --fs-uuid` (that one needs the search module: GRUB hangs).
GRUB_EARLY_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search.fs_uuid @UUID@ root
set prefix=($root)/boot/grub
"""
GRUB_CFG = """serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set default=0
set timeout=0
menuentry '@TITLE@' {
    search.fs_uuid @UUID@ root
    linux @KERNEL@ root=UUID=@UUID@ @ROOTOPTS@ @CMDLINE@
    initrd @INITRD@
}
"""

DEBIAN_CLOUD_CFG = """# hvp test image: the seed is a NoCloud ISO (label cidata), nothing else is probed
datasource_list: [ NoCloud, None ]
"""
DEBIAN_HOSTS = """127.0.0.1\tlocalhost
::1\t\tlocalhost ip6-localhost ip6-loopback
ff02::1\t\tip6-allnodes
ff02::2\t\tip6-allrouters
"""

# The fast image's modules, loaded by its initramfs (dependencies are added and ordered
# from each module's .modinfo). crc32c_generic: ext4's metadata checksums (a softdep).
FAST_MODULES = (
    "evdev", "button",
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_balloon", "e1000",
    "ata_piix", "ahci", "sd_mod", "sr_mod", "isofs", "crc32c_generic", "ext4",
)

FAST_INITRAMFS_INIT = """#!/bin/sh
# initramfs /init of the hvp fast image: load the drivers, mount root=UUID=..., switch.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
dmesg -n 1
while read -r m; do
    insmod "/lib/modules/$m.ko" 2>/dev/null || echo "HVP-INITRAMFS-WARN insmod $m failed"
done </etc/modules.order
root=
for tok in $(cat /proc/cmdline); do
    case "$tok" in root=*) root=${tok#root=} ;; esac
done
n=0
while ! dev=$(findfs "$root" 2>/dev/null) && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if [ -z "$dev" ] || ! mount -t ext4 -o rw "$dev" /newroot; then
    echo "HVP-INITRAMFS-ERROR cannot mount root $root ($dev)"
    exec sh
fi
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot /sbin/init
"""

FAST_INITTAB = """# busybox init of the hvp fast image
::sysinit:/etc/hvp/rc
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/hvp/shutdown
"""

FAST_SHUTDOWN = """#!/bin/sh
killall dropbear udhcpc acpid getty 2>/dev/null
sleep 0.2
sync
mount -o remount,ro / 2>/dev/null
exit 0
"""

FAST_POWER_BUTTON = f"""#!/bin/sh
# Run by busybox acpid on an ACPI power-button press: a clean poweroff through init.
echo "{POWEROFF_MARKER}" >/dev/console
poweroff
"""

# `cloud-init status [--wait]` for panel code that polls it (the fast image has no cloud-init).
FAST_CLOUD_INIT_STUB = """#!/bin/sh
# cloud-init stand-in of the hvp fast image: only `cloud-init status [--wait]`.
[ "$1" = status ] || { echo "cloud-init: only 'status' is supported here" >&2; exit 1; }
shift
wait=0
for a in "$@"; do [ "$a" = --wait ] || [ "$a" = -w ] && wait=1; done
while [ ! -e /var/lib/cloud/instance/boot-finished ]; do
    [ $wait = 1 ] || { echo "status: running"; exit 0; }
    sleep 0.5
done
echo "status: done"
"""

# `sudo CMD` as root runs CMD (so commands written for the Debian image also work).
FAST_SUDO_STUB = """#!/bin/sh
while [ $# -gt 0 ]; do
    case "$1" in
        -u|-g|-C|-D|-p|-r|-t|-U|-h) shift 2 ;;
        --) shift; break ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""

FAST_PROFILE = """export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\\h:\\w\\$ '
"""

FAST_RC = r"""#!/bin/sh
# /etc/hvp/rc of the hvp fast image: run on every boot by busybox init (::sysinit).
# Applies the NoCloud seed (ISO 9660, label cidata); tests/support/images.py says what.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 022
exec </dev/console >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=755,nosuid tmpfs /run
mount -t tmpfs -o mode=1777,nosuid tmpfs /tmp
dmesg -n 1
ip link set dev lo up
hostname -F /etc/hostname 2>/dev/null
n=0
while [ ! -e /dev/input/event0 ] && [ $n -lt 20 ]; do sleep 0.05; n=$((n + 1)); done
[ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /run/acpid.log

LIB=/usr/lib/hvp RUN=/run/hvp
SEED=$RUN/seed CFG=$RUN/cfg
OUTLOG=/var/log/cloud-init-output.log
mkdir -p $SEED $CFG/meta-data $CFG/user-data $CFG/network-config /var/lib/cloud/instances \
    /var/lib/cloud/data /var/log /root /etc/dropbear /etc/ssh
rm -f /var/lib/cloud/instance/boot-finished
serr() { echo "@SEED_ERR@ $*"; }
nerr() { echo "@NET_ERR@ $*"; }
# get FILE: the parsed scalar's value (status 1 when absent); use `cat` for exact bytes.
get() { [ -f "$1" ] && cat "$1"; }
truthy() {
    case "$(cat "$1" 2>/dev/null)" in true|True|TRUE|yes|Yes|YES|on|On|ON) return 0 ;; esac
    return 1
}
items() { for i in "$1"/[0-9][0-9][0-9]; do [ -e "$i" ] && echo "$i"; done; }

# -- the seed: the first CD-ROM/disk whose ISO 9660 volume id is cidata ------------------
find_seed() {
    n=0
    while [ $n -lt 60 ]; do
        for d in /dev/sr* /dev/vd* /dev/sd* /dev/hd*; do
            [ -b "$d" ] || continue
            dd if="$d" of=$RUN/pvd bs=2048 skip=16 count=1 2>/dev/null || continue
            [ "$(dd if=$RUN/pvd bs=1 skip=1 count=5 2>/dev/null)" = CD001 ] || continue
            case "$(dd if=$RUN/pvd bs=1 skip=40 count=32 2>/dev/null | tr -d ' ')" in
                cidata|CIDATA) echo "$d"; return 0 ;;
            esac
        done
        sleep 0.1; n=$((n + 1))
    done
    return 1
}
USER_SCRIPT=
if dev=$(find_seed) && mkdir -p /mnt/seed && mount -t iso9660 -o ro "$dev" /mnt/seed; then
    cp /mnt/seed/* $SEED/ 2>/dev/null
    umount /mnt/seed
    for f in meta-data user-data network-config; do
        [ -f "$SEED/$f" ] || continue
        if [ $f = user-data ]; then
            case "$(head -n 1 "$SEED/$f")" in
                '#cloud-config'*) ;;
                '#!'*) USER_SCRIPT=$SEED/$f; continue ;;
                *) serr "user-data is neither #cloud-config nor a #! script"; continue ;;
            esac
        fi
        awk -v OUT="$CFG/$f" -f $LIB/seedyaml.awk "$SEED/$f" || serr "cannot parse $f"
    done
else
    serr "no NoCloud seed (an ISO 9660 volume labelled cidata) found"
fi
MD=$CFG/meta-data UD=$CFG/user-data NC=$CFG/network-config
[ -d $NC/network ] && NC=$NC/network

# -- instance: per-instance steps run once per instance-id --------------------------------
IID=$(get $MD/instance-id | tr -c 'A-Za-z0-9._-' _)
[ -n "$IID" ] || IID=iid-hvp-none
NEW=1
[ "$(cat /var/lib/cloud/data/instance-id 2>/dev/null)" = "$IID" ] && NEW=0
mkdir -p /var/lib/cloud/instances/$IID
ln -sfn /var/lib/cloud/instances/$IID /var/lib/cloud/instance
echo "HVP-SEED-INSTANCE $IID $([ $NEW = 1 ] && echo new || echo seen)"

# -- hostname (every boot) ----------------------------------------------------------------
if ! truthy $UD/preserve_hostname; then
    FQDN=$(get $UD/fqdn || get $UD/hostname || get $MD/local-hostname || get $MD/hostname)
    if [ -n "$FQDN" ]; then
        H=${FQDN%%.*}
        hostname "$H" && echo "$H" >/etc/hostname
        {
            echo "127.0.0.1 localhost"
            if [ "$FQDN" = "$H" ]; then echo "127.0.1.1 $H"; else echo "127.0.1.1 $FQDN $H"; fi
            echo "::1 localhost ip6-localhost ip6-loopback"
        } >/etc/hosts
    fi
fi
H=$(hostname)

# -- commands: a string runs with sh -c, a list is an argv --------------------------------
run_item() {
    if [ -f "$1" ]; then sh -c "$(cat "$1")"; return; fi
    local d=$1 a
    set --
    for a in $(items "$d"); do [ -f "$a" ] && set -- "$@" "$(cat "$a")"; done
    [ $# -gt 0 ] || return 0
    "$@"
}
run_list() { # $1 list dir, $2 label: output goes to $OUTLOG, then to the console
    [ -d "$1" ] || return 0
    local start i n=0 rc
    start=$(wc -c <$OUTLOG 2>/dev/null || echo 0)
    for i in $(items "$1"); do
        (cd / && run_item "$i") >>$OUTLOG 2>&1 </dev/null
        rc=$?
        [ $rc = 0 ] || echo "$2 item $n failed (exit $rc)" >>$OUTLOG
        n=$((n + 1))
    done
    tail -c +$((start + 1)) $OUTLOG
}
run_list $UD/bootcmd bootcmd

# -- network (every boot): network-config v2 ----------------------------------------------
by_mac() {
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return 0; }
    done
    return 1
}
READY=
configure_eth() { # $1: an ethernets entry
    local e=$1 id=${1##*/} mac cur name v w a r to via fam m s
    mac=$(get "$e/match/macaddress" | tr A-F a-f)
    cur=
    w=0
    while [ $w -lt 40 ]; do
        if [ -n "$mac" ]; then
            cur=$(by_mac "$mac") && break
        elif m=$(get "$e/match/name"); then
            for d in /sys/class/net/$m; do [ -e "$d" ] && { cur=${d##*/}; break; }; done
            [ -n "$cur" ] && break
        else
            [ -e "/sys/class/net/$id" ] && { cur=$id; break; }
        fi
        sleep 0.05; w=$((w + 1))
    done
    [ -n "$cur" ] || { nerr "$id no matching interface${mac:+ (mac $mac)}"; return 1; }
    name=$(get "$e/set-name") || name=$cur
    if [ "$name" != "$cur" ]; then
        ip link set dev "$cur" down
        ip link set dev "$cur" name "$name" || { nerr "$id cannot rename $cur to $name"; name=$cur; }
    fi
    if v=$(get "$e/mtu"); then ip link set dev "$name" mtu "$v" || nerr "$name mtu $v"; fi
    echo 0 2>/dev/null >"/proc/sys/net/ipv6/conf/$name/accept_dad"
    if [ -f "$e/accept-ra" ]; then
        if truthy "$e/accept-ra"; then v=1; else v=0; fi
        echo $v 2>/dev/null >"/proc/sys/net/ipv6/conf/$name/accept_ra"
    fi
    ip link set dev "$name" up
    for a in $(items "$e/addresses"); do
        [ -f "$a" ] || continue
        v=$(cat "$a")
        ip addr add "$v" dev "$name" || nerr "$name addr $v"
    done
    if truthy "$e/dhcp4"; then
        udhcpc -i "$name" -s $LIB/udhcpc.sh -n -t 20 -T 1 -A 1 >/dev/null 2>&1 \
            || nerr "$name no dhcp lease"
    fi
    if v=$(get "$e/gateway4"); then ip -4 route replace default via "$v" dev "$name" || nerr "$name gw $v"; fi
    if v=$(get "$e/gateway6"); then ip -6 route replace default via "$v" dev "$name" || nerr "$name gw $v"; fi
    for r in $(items "$e/routes"); do
        [ -d "$r" ] || continue
        to=$(get "$r/to") || to=default
        via=$(get "$r/via") || via=
        fam=-4
        case "$to$via" in *:*) fam=-6 ;; esac
        case "$to" in 0.0.0.0/0|::/0) to=default ;; esac
        m=$(get "$r/metric") || m=
        ip $fam route replace "$to" ${via:+via "$via"} dev "$name" ${m:+metric "$m"} \
            || nerr "$name route $to via $via"
    done
    for a in $(items "$e/nameservers/addresses"); do
        [ -f "$a" ] && echo "nameserver $(cat "$a")" >>/etc/resolv.conf
    done
    s=
    for a in $(items "$e/nameservers/search"); do [ -f "$a" ] && s="$s $(cat "$a")"; done
    [ -n "$s" ] && echo "search$s" >>/etc/resolv.conf
    READY="$READY $name"
}
: >/etc/resolv.conf
if [ -f $SEED/network-config ] && [ "$(get $NC/config)" = disabled ]; then
    :
elif [ -f $SEED/network-config ] && [ "$(get $NC/version)" = 2 ]; then
    for k in bonds bridges vlans wifis tunnels; do
        [ -d "$NC/$k" ] && nerr "network-config $k are not supported"
    done
    for e in "$NC"/ethernets/*; do [ -d "$e" ] && configure_eth "$e"; done
else
    [ -f $SEED/network-config ] && nerr "network-config version $(get $NC/version) is not supported"
    for d in /sys/class/net/*; do
        [ "${d##*/}" = lo ] && continue
        mkdir -p $RUN/fallback/eth/match
        echo true >$RUN/fallback/eth/dhcp4
        cat "$d/address" >$RUN/fallback/eth/match/macaddress
        configure_eth $RUN/fallback/eth
        break
    done
fi
for name in $READY; do
    ip -o addr show dev "$name" | awk -v n="$name" \
        '($3 == "inet" || $3 == "inet6") && $4 !~ /^fe80:/ { print "@ADDR@ " n " " $4 }'
done
echo "@READY@"

# -- users, passwords, keys (once per instance) -------------------------------------------
home_of() { awk -F: -v u="$1" '$1 == u { print $6; exit }' /etc/passwd; }
ids_of() { awk -F: -v u="$1" '$1 == u { print $3 ":" $4; exit }' /etc/passwd; }
ensure_user() { # $1 name, $2 shell
    grep -q "^$1:" /etc/passwd && return 0
    local uid=1000 sh=${2:-/bin/sh}
    [ -x "$sh" ] || sh=/bin/sh
    while awk -F: -v u=$uid '$3 == u { f = 1 } END { exit !f }' /etc/passwd; do uid=$((uid + 1)); done
    echo "$1:x:$uid:$uid:$1:/home/$1:$sh" >>/etc/passwd
    echo "$1:x:$uid:" >>/etc/group
    echo "$1:*:1:0:99999:7:::" >>/etc/shadow
    mkdir -p "/home/$1" && chown "$uid:$uid" "/home/$1" && chmod 755 "/home/$1"
}
set_hash() { # $1 user, $2 crypt(3) hash
    awk -F: -v OFS=: -v u="$1" -v h="$2" '$1 == u { $2 = h } { print }' /etc/shadow >/etc/shadow.new \
        && cat /etc/shadow.new >/etc/shadow && rm -f /etc/shadow.new
}
set_password() { set_hash "$1" "$(mkpasswd -m sha512 "$2")"; }
set_secret() { # $1 user, $2 password or hash (a crypt hash starts with $id$)
    case "$2" in
        '$'?*'$'*'$'*) set_hash "$1" "$2" ;;
        *) set_password "$1" "$2" ;;
    esac
}
add_keys() { # $1 user, $2 a list of keys
    local h ids k
    h=$(home_of "$1"); ids=$(ids_of "$1")
    [ -n "$h" ] || return 0
    mkdir -p "$h/.ssh"
    for k in $(items "$2"); do [ -f "$k" ] && { cat "$k"; echo; }; done >>"$h/.ssh/authorized_keys"
    chmod 700 "$h/.ssh"; chmod 600 "$h/.ssh/authorized_keys"; chmod go-w "$h"
    chown -R "$ids" "$h/.ssh"
}
write_file() { # $1: a write_files entry
    local f=$1 path perm owner tmp=$RUN/write_file
    path=$(get "$f/path") || { serr "write_files entry without path"; return 1; }
    case "$path" in /*) ;; *) path=/$path ;; esac
    mkdir -p "$(dirname "$path")"
    : >$tmp
    case "$(get "$f/encoding" | tr A-Z a-z)" in
        b64|base64) get "$f/content" | base64 -d >$tmp ;;
        gz|gzip) get "$f/content" | gunzip -c >$tmp ;;
        gz+b64|gz+base64|gzip+b64|gzip+base64) get "$f/content" | base64 -d | gunzip -c >$tmp ;;
        ''|text/plain) get "$f/content" >$tmp ;;
        *) serr "write_files $path: unknown encoding"; get "$f/content" >$tmp ;;
    esac
    if truthy "$f/append"; then cat $tmp >>"$path"; else cat $tmp >"$path"; fi
    rm -f $tmp
    perm=$(get "$f/permissions") || perm=0644
    case "$perm" in 0o*|0O*) perm=${perm#0?} ;; esac
    # a plain YAML integer without a leading 0 is decimal (420 = 0644), a string is octal
    if [ -e "$f/.int.permissions" ] && [ "${perm#0}" = "$perm" ]; then perm=$(printf %o "$perm"); fi
    chmod "$perm" "$path" || serr "write_files $path: bad permissions $perm"
    owner=$(get "$f/owner") || owner=root:root
    chown "$owner" "$path" 2>/dev/null || serr "write_files $path: cannot chown to $owner"
}
PWAUTH=0
truthy $UD/ssh_pwauth && PWAUTH=1
if [ $NEW = 1 ]; then
    rm -f /root/.ssh/authorized_keys
    [ -d $UD/ssh_authorized_keys ] && add_keys root $UD/ssh_authorized_keys
    for u in $(items $UD/users); do
        [ -d "$u" ] || continue  # "default": root is this image's default user
        name=$(get "$u/name") || continue
        case "$name" in ''|*[!A-Za-z0-9_.-]*) serr "bad user name: $name"; continue ;; esac
        if [ "$name" != root ]; then
            ensure_user "$name" "$(get "$u/shell")"
            rm -f "/home/$name/.ssh/authorized_keys"
        fi
        if v=$(get "$u/hashed_passwd") || v=$(get "$u/passwd"); then set_hash "$name" "$v"
        elif v=$(get "$u/plain_text_passwd"); then set_password "$name" "$v"; fi
        [ -d "$u/ssh_authorized_keys" ] && add_keys "$name" "$u/ssh_authorized_keys"
    done
    if v=$(get $UD/password); then set_secret root "$v"; fi
    {
        get $UD/chpasswd/list && echo
        for i in $(items $UD/chpasswd/list); do [ -f "$i" ] && { cat "$i"; echo; }; done
    } | while IFS= read -r line; do
        case "$line" in *:*) ;; *) continue ;; esac
        case "${line#*:}" in R|RANDOM) continue ;; esac
        set_secret "${line%%:*}" "${line#*:}"
    done
    for c in $(items $UD/chpasswd/users); do
        name=$(get "$c/name") || continue
        v=$(get "$c/password") || continue
        case "$(get "$c/type")" in
            text) set_password "$name" "$v" ;;
            RANDOM|random) ;;
            *) set_secret "$name" "$v" ;;
        esac
    done
    rm -f /etc/dropbear/dropbear_*_host_key /etc/ssh/ssh_host_*
    for t in rsa ecdsa ed25519; do
        [ -f "$UD/ssh_keys/${t}_private" ] || continue
        cat "$UD/ssh_keys/${t}_private" >/etc/ssh/ssh_host_${t}_key
        chmod 600 /etc/ssh/ssh_host_${t}_key
        get "$UD/ssh_keys/${t}_public" >/etc/ssh/ssh_host_${t}_key.pub
        dropbearconvert openssh dropbear /etc/ssh/ssh_host_${t}_key \
            /etc/dropbear/dropbear_${t}_host_key >/dev/null 2>&1 \
            || serr "cannot convert the $t host key from ssh_keys"
    done
    for f in $(items $UD/write_files); do [ -d "$f" ] && ! truthy "$f/defer" && write_file "$f"; done
    for f in $(items $UD/write_files); do [ -d "$f" ] && truthy "$f/defer" && write_file "$f"; done
    echo "$IID" >/var/lib/cloud/data/instance-id
fi
ls /etc/dropbear/dropbear_*_host_key >/dev/null 2>&1 \
    || dropbearkey -t ed25519 -f /etc/dropbear/dropbear_ed25519_host_key >/dev/null 2>&1

# -- runcmd and a user-data script (once per instance) ------------------------------------
if [ $NEW = 1 ]; then
    run_list $UD/runcmd runcmd
    if [ -n "$USER_SCRIPT" ]; then
        cp "$USER_SCRIPT" /var/lib/cloud/instance/user-data.sh
        chmod 700 /var/lib/cloud/instance/user-data.sh
        start=$(wc -c <$OUTLOG 2>/dev/null || echo 0)
        (cd / && /var/lib/cloud/instance/user-data.sh) >>$OUTLOG 2>&1 </dev/null \
            || echo "user-data script failed" >>$OUTLOG
        tail -c +$((start + 1)) $OUTLOG
    fi
fi

# -- a template's own configuration script (config: script), once per instance -----------
# The panel's contract (hypervisor_panel/vms/seed.py): run hvp-configure from the seed with
# HVP_SEED naming the folder of its input files, before the SSH server starts.
if [ $NEW = 1 ] && [ -f $SEED/hvp-configure ]; then
    cp $SEED/hvp-configure /var/lib/cloud/instance/hvp-configure
    chmod 700 /var/lib/cloud/instance/hvp-configure
    start=$(wc -c <$OUTLOG 2>/dev/null || echo 0)
    (cd / && HVP_SEED=$SEED /var/lib/cloud/instance/hvp-configure) >>$OUTLOG 2>&1 </dev/null \
        || echo "hvp-configure failed" >>$OUTLOG
    tail -c +$((start + 1)) $OUTLOG
fi

# -- report, then SSH ---------------------------------------------------------------------
echo "@KEYS_BEGIN@"
for k in /etc/dropbear/dropbear_*_host_key; do
    [ -f "$k" ] && dropbearkey -y -f "$k" 2>/dev/null | grep '^ssh-\|^ecdsa-'
done
echo "@KEYS_END@"
echo "@APPLIED@ hostname=$H"
set -- -p 22 -P /run/dropbear.pid -E
for k in /etc/dropbear/dropbear_*_host_key; do [ -f "$k" ] && set -- "$@" -r "$k"; done
[ $PWAUTH = 1 ] || set -- "$@" -s
if dropbear "$@" 2>>/var/log/dropbear.log; then echo "@SSH_READY@ port=22"; else serr "dropbear did not start"; fi
cut -d' ' -f1 /proc/uptime >/var/lib/cloud/instance/boot-finished
exit 0
""".replace("@SEED_ERR@", SEED_ERROR_PREFIX).replace("@NET_ERR@", NET_ERROR_PREFIX) \
    .replace("@ADDR@", ADDR_PREFIX).replace("@READY@", NET_READY_MARKER) \
    .replace("@KEYS_BEGIN@", HOST_KEYS_BEGIN).replace("@KEYS_END@", HOST_KEYS_END) \
    .replace("@APPLIED@", SEED_APPLIED_PREFIX).replace("@SSH_READY@", SSH_READY_MARKER)

# busybox awk: YAML (any layout yaml.safe_dump writes, flow/JSON, block scalars, anchors)
# into a directory tree the rc script reads. Checked against PyYAML by tests/test_images.py.
SEED_YAML_AWK = r'''# seedyaml.awk: YAML (what cloud-init seeds use) -> a directory tree, for busybox awk.
# Usage: awk -v OUT=DIR -f seedyaml.awk FILE
# A mapping becomes a directory (keys sanitised to [A-Za-z0-9_.-]), a sequence a directory
# of items 000, 001, ... plus an empty ".seq" file, a scalar a file holding exactly its
# value, null nothing; a plain integer scalar also gets ".int.<key>" beside it (so 420 and
# '420' stay apart). Handles block mappings and sequences (PyYAML's indentless and compact
# "- - x" / "- k: v" forms too), plain, single- and double-quoted scalars folded over lines
# (escapes, "\" continuations), literal and folded block scalars, flow [..] / {..} (JSON),
# anchors and aliases, comments, "---" and "...". Tags are ignored; complex "? " keys and
# merge keys are not supported.
function ind(s) { match(s, /^ */); return RLENGTH }
function sp(n,   s) { s = ""; while (n-- > 0) s = s " "; return s }
function ltrim(s) { sub(/^[ \t]+/, "", s); return s }
function rtrim(s) { sub(/[ \t]+$/, "", s); return s }
function skipws() {
    while (pos <= N && (L[pos] ~ /^[ \t]*(#.*)?$/ || L[pos] ~ /^(---|\.\.\.)[ \t]*$/)) pos++
}
function clean(k) {
    gsub(/[^A-Za-z0-9_.-]/, "_", k)
    if (k == "" || k == "." || k == "..") k = "_" k
    return k
}
function mkd(d) {
    if (d in MADE) return
    system("mkdir -p '" OUT d "'")
    MADE[d] = 1
}
function dirof(p) { sub(/\/[^\/]*$/, "", p); return p }
function emit(p, v) {
    mkd(dirof(p))
    printf "%s", v > (OUT p)
    close(OUT p)
}
function anchor_done(a, p) { if (a != "") ANCH[a] = p }
function alias(p, a) {
    if (!(a in ANCH)) return
    mkd(dirof(p))
    system("cp -a '" OUT ANCH[a] "' '" OUT p "'")
}
function plainval(p, v,   b) {
    if (v == "" || v == "~" || v == "null" || v == "Null" || v == "NULL") return
    emit(p, v)
    if (v ~ /^[-+]?[0-9][0-9_]*$/) { b = p; sub(/.*\//, "", b); emit(dirof(p) "/.int." b, "") }
}
# Character code -> UTF-8 bytes.
function utf8(c) {
    if (c < 128) return sprintf("%c", c)
    if (c < 2048) return sprintf("%c%c", 192 + int(c / 64), 128 + c % 64)
    if (c < 65536)
        return sprintf("%c%c%c", 224 + int(c / 4096), 128 + int(c / 64) % 64, 128 + c % 64)
    return sprintf("%c%c%c%c", 240 + int(c / 262144), 128 + int(c / 4096) % 64,
                   128 + int(c / 64) % 64, 128 + c % 64)
}
function hexval(h,   i, n) {
    n = 0
    h = tolower(h)
    for (i = 1; i <= length(h); i++) n = n * 16 + index("0123456789abcdef", substr(h, i, 1)) - 1
    return n
}
# Line folding inside quoted scalars: s[i] is the first "\n"; sets FOLD_END to the index
# after the break(s) and leading blanks, returns " " or one "\n" per empty line.
function fold(s, i,   n, c, out) {
    n = 0
    while (1) {
        i++
        while ((c = substr(s, i, 1)) == " " || c == "\t") i++
        if (c != "\n") break
        n++
    }
    FOLD_END = i
    if (n == 0) return " "
    out = ""
    while (n-- > 0) out = out "\n"
    return out
}
# Decode the body of a quoted scalar (without the quotes); q is ' or ".
function unquote(s, q,   i, c, out, ws, e, n) {
    out = ""; ws = ""; i = 1
    while (i <= length(s)) {
        c = substr(s, i, 1)
        if (c == " " || c == "\t") { ws = ws c; i++; continue }
        if (c == "\n") { ws = ""; out = out fold(s, i); i = FOLD_END; continue }
        out = out ws; ws = ""
        if (q == "'" && c == "'") { out = out "'"; i += 2; continue }
        if (q == "\"" && c == "\\") {
            e = substr(s, i + 1, 1)
            if (e == "\n") { n = fold(s, i + 1); out = out (n == " " ? "" : n); i = FOLD_END; continue }
            i += 2
            if (e == "n") out = out "\n"
            else if (e == "t" || e == "\t") out = out "\t"
            else if (e == "r") out = out "\r"
            else if (e == "0") out = out sprintf("%c", 0)
            else if (e == "a") out = out "\007"
            else if (e == "b") out = out "\010"
            else if (e == "v") out = out "\013"
            else if (e == "f") out = out "\014"
            else if (e == "e") out = out "\033"
            else if (e == "N") out = out utf8(133)
            else if (e == "_") out = out utf8(160)
            else if (e == "L") out = out utf8(8232)
            else if (e == "P") out = out utf8(8233)
            else if (e == "x") { out = out utf8(hexval(substr(s, i, 2))); i += 2 }
            else if (e == "u") {
                n = hexval(substr(s, i, 4)); i += 4
                if (n >= 55296 && n < 56320 && substr(s, i, 2) == "\\u") {  # JSON surrogates
                    n = 65536 + (n - 55296) * 1024 + hexval(substr(s, i + 2, 4)) - 56320; i += 6
                }
                out = out utf8(n)
            }
            else if (e == "U") { out = out utf8(hexval(substr(s, i, 8))); i += 8 }
            else out = out e
            continue
        }
        out = out c; i++
    }
    return out ws
}
# Raw text of a quoted scalar whose opening quote is at column col of L[pos]: sets QEND_POS
# (its last line) and QREST (text after the closing quote); returns the body.
function quoted_raw(col,   q, s, i, c, p, body) {
    q = substr(L[pos], col + 1, 1)
    p = pos; s = substr(L[p], col + 2); body = ""
    while (1) {
        i = 1
        while (i <= length(s)) {
            c = substr(s, i, 1)
            if (q == "\"" && c == "\\") { i += 2; continue }
            if (c == q) {
                if (q == "'" && substr(s, i + 1, 1) == "'") { i += 2; continue }
                QEND_POS = p; QREST = substr(s, i + 1)
                return body substr(s, 1, i - 1)
            }
            i++
        }
        body = body s "\n"
        if (++p > N) { QEND_POS = N; QREST = ""; return body }
        s = L[p]
    }
}
# Flow collections: FS_ text, FI index.
function fskip(   c) {
    while ((c = substr(FS_, FI, 1)) == " " || c == "\t" || c == "\n" || c == "\r") FI++
    if (c == "#") { while (FI <= length(FS_) && substr(FS_, FI, 1) != "\n") FI++; fskip() }
}
function fquoted(   q, i, c, body) {
    q = substr(FS_, FI, 1); i = FI + 1
    while (i <= length(FS_)) {
        c = substr(FS_, i, 1)
        if (q == "\"" && c == "\\") { i += 2; continue }
        if (c == q) {
            if (q == "'" && substr(FS_, i + 1, 1) == "'") { i += 2; continue }
            break
        }
        i++
    }
    body = substr(FS_, FI + 1, i - FI - 1)
    FI = i + 1
    return unquote(body, q)
}
function fplain(   s, c, out) {
    s = ""
    while (FI <= length(FS_)) {
        c = substr(FS_, FI, 1)
        if (c == "," || c == "]" || c == "}" || c == "[" || c == "{") break
        if (c == ":" && index(" \t\n,]}", substr(FS_, FI + 1, 1))) break
        if (c == ":" && FI == length(FS_)) break
        s = s c; FI++
    }
    s = rtrim(ltrim(s))
    gsub(/[ \t]*\n[ \t]*/, "\n", s)
    out = ""
    while (match(s, /\n+/)) {
        out = out substr(s, 1, RSTART - 1) (RLENGTH == 1 ? " " : substr(s, RSTART + 1, RLENGTH - 1))
        s = substr(s, RSTART + RLENGTH)
    }
    return out s
}
function fnode(p,   c, i, k, a) {
    fskip()
    a = ""
    if (substr(FS_, FI, 1) == "&") {
        match(substr(FS_, FI), /^&[^] \t\n,}]+/); a = substr(FS_, FI + 1, RLENGTH - 1)
        FI += RLENGTH; fskip()
    }
    if (substr(FS_, FI, 1) == "!") { match(substr(FS_, FI), /^![^ \t\n]*/); FI += RLENGTH; fskip() }
    c = substr(FS_, FI, 1)
    if (c == "*") {
        match(substr(FS_, FI), /^\*[^] \t\n,}]+/); alias(p, substr(FS_, FI + 1, RLENGTH - 1))
        FI += RLENGTH; return
    }
    if (c == "[") {
        FI++; emit(p "/.seq", ""); i = 0
        while (1) {
            fskip(); c = substr(FS_, FI, 1)
            if (c == "]" || c == "") { FI++; break }
            if (c == ",") { FI++; continue }
            fnode(p "/" sprintf("%03d", i++))
        }
    } else if (c == "{") {
        FI++; mkd(p)
        while (1) {
            fskip(); c = substr(FS_, FI, 1)
            if (c == "}" || c == "") { FI++; break }
            if (c == ",") { FI++; continue }
            k = (c == "\"" || c == "'") ? fquoted() : fplain()
            fskip()
            if (substr(FS_, FI, 1) == ":") { FI++; fnode(p "/" clean(k)) }
        }
    } else if (c == "\"" || c == "'") {
        emit(p, fquoted())
    } else {
        plainval(p, fplain())
    }
    anchor_done(a, p)
}
# Flow text starting at column col of L[pos]: collect until brackets balance.
function flow(p, col,   s, depth, i, c, q, done, last) {
    s = substr(L[pos], col + 1); depth = 0; q = ""; done = 0; last = ","
    while (1) {
        for (i = 1; i <= length(s); i++) {
            c = substr(s, i, 1)
            if (q != "") {
                if (q == "\"" && c == "\\") i++
                else if (c == q && q == "'" && substr(s, i + 1, 1) == "'") i++
                else if (c == q) q = ""
                last = "x"; continue
            }
            if ((c == "\"" || c == "'") && index("[{,:", last)) q = c
            else if (c == "[" || c == "{") depth++
            else if (c == "]" || c == "}") { if (--depth == 0) { done = 1; break } }
            else if (c == "#" && (i == 1 || substr(s, i - 1, 1) ~ /[ \t]/)) { i--; break }
            if (c != " " && c != "\t") last = c
        }
        FS_ = FS_ substr(s, 1, i)
        if (done || pos >= N) break
        FS_ = FS_ "\n"; s = L[++pos]
    }
    pos++
    FI = 1; fnode(p); FS_ = ""
}
# Block scalar (| or >) with header h, for a node whose parent has indent pind.
function blockscalar(p, h, pind,   chomp, bi, lines, n, i, s, out, trail, m, k, last) {
    chomp = (h ~ /-/) ? "strip" : (h ~ /\+/) ? "keep" : "clip"
    bi = 0
    if (match(h, /[1-9]/)) bi = (pind < 0 ? 0 : pind) + substr(h, RSTART, 1)
    pos++
    if (!bi) {
        m = pos
        while (m <= N && L[m] ~ /^ *$/) m++
        bi = (m <= N && ind(L[m]) > pind) ? ind(L[m]) : pind + 1
    }
    n = 0
    while (pos <= N) {
        s = L[pos]
        if (s !~ /^ *$/ && ind(s) < bi) break
        lines[++n] = (s ~ /^ *$/) ? "" : substr(s, bi + 1); pos++
    }
    trail = 0
    while (n > 0 && lines[n] == "") { n--; trail++ }
    out = ""
    if (substr(h, 1, 1) == "|") {
        for (i = 1; i <= n; i++) out = out (i > 1 ? "\n" : "") lines[i]
    } else {
        k = 0; last = ""
        for (i = 1; i <= n; i++) {
            s = lines[i]
            if (s == "") { k++; continue }
            if (last == "") { while (k-- > 0) out = out "\n" }
            else if (last !~ /^[ \t]/ && s !~ /^[ \t]/) out = out (k ? "" : " ")
            else out = out "\n"
            if (last != "") while (k-- > 0) out = out "\n"
            out = out s; last = s; k = 0
        }
    }
    if (n > 0 && chomp != "strip") out = out "\n"
    if (chomp == "keep") while (trail-- > 0) out = out "\n"
    emit(p, out)
}
# Is the text s (a node's content) a "key: ..." mapping entry? Sets KEY and KREST.
function mapentry(s,   raw, save, k) {
    if (s ~ /^["']/) {
        save = L[pos]; L[pos] = s
        raw = quoted_raw(0); L[pos] = save
        if (QEND_POS != pos || QREST !~ /^[ \t]*:([ \t]|$)/) return 0
        KEY = unquote(raw, substr(s, 1, 1)); KREST = QREST
        sub(/^[ \t]*:/, "", KREST); KREST = ltrim(KREST)
        return 1
    }
    if (s ~ /^[\[{|>&*!%@`#]/ || s ~ /^-([ \t]|$)/) return 0
    if (!match(s, /:([ \t]|$)/)) return 0
    k = substr(s, 1, RSTART - 1)
    if (k ~ /[ \t]#/) return 0
    KEY = rtrim(k); KREST = ltrim(substr(s, RSTART + 1))
    return 1
}
# The value whose text starts at column col of L[pos] (rest = that text), for a node
# whose parent has indent pind; mapval: it is a mapping value (indentless "- " allowed).
function value(p, rest, col, pind, mapval,   a, m, raw, v, c) {
    a = ""
    if (rest ~ /^&/) {
        match(rest, /^&[^ \t]+/); a = substr(rest, 2, RLENGTH - 1)
        m = substr(rest, RLENGTH + 1); col += length(rest) - length(ltrim(m)); rest = ltrim(m)
    }
    if (rest ~ /^!/) {
        match(rest, /^![^ \t]*/)
        m = substr(rest, RLENGTH + 1); col += length(rest) - length(ltrim(m)); rest = ltrim(m)
    }
    c = substr(rest, 1, 1)
    if (rest == "" || c == "#") {
        pos++; skipws()
        if (pos <= N && (ind(L[pos]) > pind ||
                         (mapval && ind(L[pos]) == pind && substr(L[pos], pind + 1) ~ /^-([ \t]|$)/)))
            block(p, pind)
    } else if (c == "*") {
        match(rest, /^\*[^ \t]+/); alias(p, substr(rest, 2, RLENGTH - 1)); pos++
    } else if (rest ~ /^-([ \t]|$)/) {
        L[pos] = sp(col) rest; seq(p, col)
    } else if (!mapval && mapentry(rest)) {
        L[pos] = sp(col) rest; map(p, col)
    } else if (c == "\"" || c == "'") {
        L[pos] = sp(col) rest
        raw = quoted_raw(col); pos = QEND_POS + 1
        emit(p, unquote(raw, c))
    } else if (c == "[" || c == "{") {
        L[pos] = sp(col) rest; flow(p, col)
    } else if (c == "|" || c == ">") {
        blockscalar(p, rest, pind)
    } else {
        v = rest; sub(/[ \t]+#.*$/, "", v); v = rtrim(v)
        pos++
        while (pos <= N) {
            if (L[pos] ~ /^[ \t]*$/) {
                m = pos; while (m <= N && L[m] ~ /^[ \t]*$/) m++
                if (m > N || ind(L[m]) <= pind || L[m] ~ /^[ \t]*#/) break
                for (; pos < m; pos++) v = v "\n"
                v = v rtrim(ltrim(L[pos])); pos++; continue
            }
            if (ind(L[pos]) <= pind || L[pos] ~ /^[ \t]*#/) break
            m = rtrim(ltrim(L[pos])); sub(/[ \t]+#.*$/, "", m)
            v = v " " m; pos++
        }
        plainval(p, v)
    }
    anchor_done(a, p)
}
function seq(p, n,   i, s, rest) {
    emit(p "/.seq", ""); i = 0
    while (1) {
        skipws()
        if (pos > N || ind(L[pos]) != n) break
        s = substr(L[pos], n + 1)
        if (s !~ /^-([ \t]|$)/) break
        rest = ltrim(substr(s, 2))
        value(p "/" sprintf("%03d", i++), rest, n + length(s) - length(rest), n, 0)
    }
}
function map(p, n,   s) {
    mkd(p)
    while (1) {
        skipws()
        if (pos > N || ind(L[pos]) != n) break
        s = substr(L[pos], n + 1)
        if (!mapentry(s)) break
        value(p "/" clean(KEY), KREST, n + length(s) - length(KREST), n, 1)
    }
}
# A block node on the line pos, more indented than pind (or an indentless sequence).
function block(p, pind,   n, s) {
    skipws()
    if (pos > N) return
    n = ind(L[pos]); s = substr(L[pos], n + 1)
    if (s ~ /^-([ \t]|$)/) seq(p, n)
    else if (mapentry(s)) map(p, n)
    else value(p, s, n, pind, 0)
}
{ sub(/\r$/, ""); L[++N] = $0 }
END {
    pos = 1
    if (OUT == "") OUT = "."
    block("", -1)
}
'''

_FORMAT = "1"  # bump when the layout of a cache directory changes


# -- public API ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TemplateImage:
    """A built, cached OS-template disk image.

    ``qcow2``: the image (compressed qcow2, compat 1.1); never write to it, boot an overlay
    (``qemu-img create -f qcow2 -F qcow2 -b QCOW2 overlay``). ``raw_size``: its virtual
    size in bytes. ``local_deb``: a tiny package (:data:`LOCAL_DEB_NAME`) that installs
    ``/usr/bin/hvp-hello`` printing :data:`LOCAL_DEB_OUTPUT`; it works with ``dpkg -i``
    in both images. ``index``: the OS-template metadata (``hypervisor_panel.os_templates``
    ``METADATA_SCHEMA``); :meth:`index_entry` adds ``file`` for a repository index.
    ``build_seconds``: how long the cached build took; ``cached``: this call built nothing.
    """

    qcow2: Path
    raw_size: int
    kernel_version: str
    default_user: str | None
    local_deb: Path
    index: dict[str, Any]
    build_seconds: float
    cached: bool

    def index_entry(self, file: str) -> dict[str, Any]:
        """The index entry for this image stored at ``file`` (relative to the index)."""
        return {**self.index, "file": file}


@dataclass(frozen=True)
class DebianImage(TemplateImage):
    """Debian 12 with real cloud-init; log in as ``default_user`` (``debian``, sudo)."""


@dataclass(frozen=True)
class FastImage(TemplateImage):
    """busybox + dropbear; log in as ``root``; ``features`` = :data:`FAST_FEATURES`."""

    features: tuple[str, ...] = field(default=FAST_FEATURES)


def debian_image(cache_dir: Path) -> DebianImage:
    """The cached Debian 12 cloud-init image, built into ``cache_dir`` on first use."""
    recipe = _debian_recipe()
    data = _cached_build(Path(cache_dir), "debian12", recipe, _build_debian)
    return DebianImage(**data)


def fast_image(cache_dir: Path) -> FastImage:
    """The cached fast busybox image, built into ``cache_dir`` on first use."""
    recipe = _fast_recipe()
    data = _cached_build(Path(cache_dir), "fast", recipe, _build_fast)
    return FastImage(**data)


def nocloud_seed(path: Path, meta_data: Mapping[str, Any] | str,
                 user_data: Mapping[str, Any] | str,
                 network_config: Mapping[str, Any] | str | None = None) -> Path:
    """Write a NoCloud seed ISO (label ``cidata``) to ``path`` with pycdlib and return it.

    Mappings are written with ``yaml.safe_dump`` (user-data gets the ``#cloud-config``
    line); strings are written as they are.
    """
    import pycdlib

    def text(value: Mapping[str, Any] | str, header: str = "") -> bytes:
        if isinstance(value, str):
            return value.encode()
        return (header + yaml.safe_dump(dict(value), sort_keys=False)).encode()

    files = {"meta-data": text(meta_data), "user-data": text(user_data, "#cloud-config\n")}
    if network_config is not None:
        files["network-config"] = text(network_config)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in files.items():
        iso9660 = "/" + name.replace("-", "").upper()[:8] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso9660, rr_name=name, joliet_path="/" + name)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    iso.write(str(tmp))
    iso.close()
    os.replace(tmp, path)
    return path


def read_seed(path: Path) -> dict[str, bytes]:
    """The files of a seed ISO by Rock Ridge name, and ``volume_id`` (the host has no iso9660)."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        out: dict[str, bytes] = {"volume_id": iso.pvd.volume_identifier.rstrip(b" ")}
        for child in iso.list_children(rr_path="/"):
            if child.is_file():
                name = child.rock_ridge.name().decode()
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path="/" + name)
                out[name] = buf.getvalue()
        return out
    finally:
        iso.close()


def ed25519_keypair(comment: str = "hvp-test") -> tuple[str, str]:
    """A new ed25519 key: (OpenSSH private key PEM, ``ssh-ed25519 AAAA... comment``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def wait_for_ssh_banner(port: int, timeout: float, host: str = "127.0.0.1") -> str:
    """Wait until ``host:port`` sends an ``SSH-`` banner; return it.

    A QEMU user-mode forward accepts TCP before the guest listens (and then closes), so
    only the banner proves that sshd/dropbear answers.
    """
    deadline = time.monotonic() + timeout
    last = "nothing"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.settimeout(3)
                data = sock.recv(256)
            if data.startswith(b"SSH-"):
                return data.split(b"\r\n", 1)[0].decode(errors="replace")
            last = repr(data[:60])
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise TimeoutError(f"no SSH banner on {host}:{port} after {timeout:.0f}s (last: {last})")


# -- the cache ----------------------------------------------------------------------------
def _cached_build(cache_dir: Path, kind: str, recipe: bytes,
                  build: Any) -> dict[str, Any]:
    """Load ``kind``'s image for ``recipe`` from the cache, building it under a lock."""
    cache_dir = cache_dir.resolve()
    digest = hashlib.sha256(recipe).hexdigest()[:16]
    final = cache_dir / f"{kind}-{digest}"
    data = _load(final)
    if data is not None:
        return data
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir / f".{kind}.lock"):
        data = _load(final)
        if data is not None:
            return data
        for stale in cache_dir.glob(f".build-{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".build-{kind}-", dir=cache_dir))
        try:
            started = time.monotonic()
            out = work / "out"
            out.mkdir()
            _write_local_deb(out / LOCAL_DEB_NAME, work / "deb")
            manifest = build(work, out)
            manifest["build_seconds"] = round(time.monotonic() - started, 1)
            manifest["recipe"] = digest
            (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
            _fsync_tree(out)
            os.rename(out, final)  # atomic: the directory appears complete or not at all
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for old in cache_dir.glob(f"{kind}-*"):
            if old != final and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        data = _load(final)
        if data is None:
            raise RuntimeError(f"the {kind} image build left no usable {final}")
        return {**data, "cached": False}


def _load(final: Path) -> dict[str, Any] | None:
    """A finished build's fields, or None when it is absent or incomplete."""
    try:
        manifest = json.loads((final / "manifest.json").read_text())
        qcow2 = final / manifest["qcow2"]
        deb = final / LOCAL_DEB_NAME
        if qcow2.stat().st_size != manifest["index"]["size"] or not deb.is_file():
            return None
        return {"qcow2": qcow2, "raw_size": int(manifest["raw_size"]),
                "kernel_version": str(manifest["kernel_version"]),
                "default_user": manifest["default_user"], "local_deb": deb,
                "index": dict(manifest["index"]),
                "build_seconds": float(manifest["build_seconds"]), "cached": True}
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path`` (serialises parallel builders)."""
    with open(lock_path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_tree(path: Path) -> None:
    """fsync every file in ``path`` and the directory itself, before the rename."""
    for p in path.iterdir():
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _run(args: list[str], cwd: Path | None = None, stdin: bytes | None = None,
         timeout: float = 1800) -> str:
    """Run a command, returning stdout; raise with the tail of its stderr on failure."""
    proc = subprocess.run(args, cwd=cwd, input=stdin, capture_output=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-3000:]
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err}")
    return proc.stdout.decode(errors="replace")


def _file_digest(path: Path) -> str:
    """sha256 of a file's content, or ``missing:PATH``."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return f"missing:{path}"


def _recipe(*parts: str | bytes) -> bytes:
    """Join recipe parts unambiguously."""
    out = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.update(len(data).to_bytes(8, "big") + data)
    return out.digest()


def _sources(*objects: Any) -> list[str]:
    """The source code of the build steps (a changed step is a changed recipe)."""
    return [inspect.getsource(o) for o in objects]


def _grub_recipe() -> list[str]:
    """What the boot code depends on: configs, core modules, the host's GRUB build."""
    return [GRUB_EARLY_CFG, GRUB_CFG, KERNEL_CMDLINE, " ".join(GRUB_CORE_MODULES),
            _file_digest(GRUB_DIR / "boot.img"), _file_digest(GRUB_DIR / "kernel.img"),
            *_sources(_make_bootable_qcow2, _write_local_deb, _index)]


# -- the local .deb -----------------------------------------------------------------------
def _write_local_deb(dest: Path, work: Path) -> None:
    """Build the dummy package hvp-hello (gzip members: busybox dpkg reads them too)."""
    (work / "DEBIAN").mkdir(parents=True)
    (work / "usr" / "bin").mkdir(parents=True)
    (work / "DEBIAN" / "control").write_text(
        "Package: hvp-hello\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: hvp tests <tests@example.invalid>\n"
        "Description: hvp test package installed from a local file\n")
    script = work / "usr" / "bin" / LOCAL_DEB_COMMAND
    script.write_text(f"#!/bin/sh\necho '{LOCAL_DEB_OUTPUT}'\n")
    script.chmod(0o755)
    _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(work), str(dest)])


# -- bootable disk ------------------------------------------------------------------------
def _make_bootable_qcow2(root: Path, work: Path, out: Path, size_mib: int, fs_uuid: str,
                         title: str, kernel: str, initrd: str, root_opts: str) -> int:
    """Put GRUB + grub.cfg into ``root``, make an MBR disk of it (ext4 at 1 MiB, no loop
    device), convert it to ``out`` (compressed qcow2); return the disk size in bytes."""
    for tool in ("sfdisk", "mke2fs", "grub-mkimage", "qemu-img"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: install fdisk e2fsprogs grub-pc-bin qemu-utils")
    grub = root / "boot" / "grub"
    (grub / "i386-pc").mkdir(parents=True, exist_ok=True)
    for item in GRUB_DIR.iterdir():
        if item.suffix in (".mod", ".lst") or item.name == "modinfo.sh":
            shutil.copyfile(item, grub / "i386-pc" / item.name)
    cfg = (GRUB_CFG.replace("@UUID@", fs_uuid).replace("@TITLE@", title)
           .replace("@KERNEL@", kernel).replace("@INITRD@", initrd)
           .replace("@ROOTOPTS@", root_opts).replace("@CMDLINE@", KERNEL_CMDLINE))
    (grub / "grub.cfg").write_text(cfg)
    early = work / "early.cfg"
    early.write_text(GRUB_EARLY_CFG.replace("@UUID@", fs_uuid))
    core = work / "core.img"
    _run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-c", str(early),
          "-p", "/boot/grub", "-d", str(GRUB_DIR), *GRUB_CORE_MODULES])
    core_bytes = core.read_bytes()
    if len(core_bytes) > PART_OFFSET - 512:
        raise RuntimeError(f"GRUB core.img is {len(core_bytes)} bytes: too big for the gap")
    raw = work / "disk.raw"
    size = size_mib * 1024 * 1024
    with open(raw, "wb") as fh:
        fh.truncate(size)
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", str(raw)],
         stdin=f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n".encode())
    part_k = (size - PART_OFFSET) // 1024
    _run(["mke2fs", "-q", "-F", "-t", "ext4", "-U", fs_uuid, "-L", "rootfs", "-d", str(root),
          "-E", f"offset={PART_OFFSET}", str(raw), f"{part_k}k"])
    boot_img = (GRUB_DIR / "boot.img").read_bytes()
    with open(raw, "r+b") as fh:
        fh.write(boot_img[:440])  # keep the disk signature and the partition table
        fh.seek(512)
        fh.write(core_bytes)
    _run(["qemu-img", "convert", "-c", "-m", "2", "-W", "-f", "raw", "-O", "qcow2",
          "-o", "compat=1.1", str(raw), str(out)])
    raw.unlink()
    return size


def _index(name: str, os_family: str, os_version: str, tags: list[str], min_disk_gib: int,
           min_memory_mib: int, default_user: str, qcow2: Path, description: str,
           ) -> dict[str, Any]:
    """OS-template metadata (fields of hypervisor_panel.os_templates.METADATA_SCHEMA)."""
    with open(qcow2, "rb") as fh:
        sha = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"name": name, "os_family": os_family, "os_version": os_version,
            "arch": "x86_64", "kind": "image", "format": "qcow2", "compression": "none",
            "tags": tags, "min_disk_gib": min_disk_gib, "min_memory_mib": min_memory_mib,
            "default_user": default_user, "config": "cloud-init", "sha256": sha,
            "size": qcow2.stat().st_size, "description": description}


# -- Debian -------------------------------------------------------------------------------
def _debian_recipe() -> bytes:
    try:
        sources = DEBIAN_SOURCES.read_bytes()
    except OSError:
        sources = b"missing"
    return _recipe(_FORMAT, "debian", DEBIAN_SUITE, ",".join(DEBIAN_PACKAGES), sources,
                   DEBIAN_CLOUD_CFG, DEBIAN_HOSTS, str(DEBIAN_DISK_MIB),
                   str(DEBIAN_MIN_MEMORY_MIB), DEBIAN_DEFAULT_USER, *_grub_recipe(),
                   *_sources(_build_debian, _customize_debian))


def _build_debian(work: Path, out: Path) -> dict[str, Any]:
    """mmdebstrap the root, customise it, make the bootable qcow2."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap not found: apt-get install mmdebstrap")
    if not DEBIAN_SOURCES.is_file():
        raise RuntimeError(f"{DEBIAN_SOURCES} (the deb822 mirror list) is missing")
    root = work / "root"
    _run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
          "--include=" + ",".join(DEBIAN_PACKAGES), DEBIAN_SUITE, str(root),
          str(DEBIAN_SOURCES)], timeout=3600)
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RuntimeError("mmdebstrap installed no kernel into /boot")
    kver = kernels[-1].name.removeprefix("vmlinuz-")
    if not (root / "boot" / f"initrd.img-{kver}").is_file():
        raise RuntimeError(f"no /boot/initrd.img-{kver} in the Debian root")
    fs_uuid = str(uuid.uuid4())
    _customize_debian(root, fs_uuid)
    qcow2 = out / "debian12.qcow2"
    size = _make_bootable_qcow2(root, work, qcow2, DEBIAN_DISK_MIB, fs_uuid, "Debian 12",
                                f"/boot/vmlinuz-{kver}", f"/boot/initrd.img-{kver}", "ro")
    shutil.rmtree(root)
    index = _index("debian-12-hvp", "debian", "12", ["debian", "debian12", "cloud-init"],
                   DEBIAN_DISK_MIB // 1024, DEBIAN_MIN_MEMORY_MIB, DEBIAN_DEFAULT_USER, qcow2,
                   "Debian 12 (bookworm) minbase with cloud-init, built for hvp tests")
    return {"qcow2": qcow2.name, "raw_size": size, "kernel_version": kver,
            "default_user": DEBIAN_DEFAULT_USER, "index": index}


def _customize_debian(root: Path, fs_uuid: str) -> None:
    """No host keys, empty machine-id, hostname localhost, empty resolv.conf, default
    hosts, fstab for the root UUID, cloud-init NoCloud only, no apt lists."""
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc" / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    (root / "etc" / "hostname").write_text("localhost\n")
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.write_text("")
    (root / "etc" / "hosts").write_text(DEBIAN_HOSTS)
    (root / "etc" / "fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    (root / "etc" / "cloud" / "cloud.cfg.d" / "90_hvp.cfg").write_text(DEBIAN_CLOUD_CFG)
    for lists in (root / "var" / "lib" / "apt" / "lists").glob("*_*"):
        lists.unlink()


# -- fast ---------------------------------------------------------------------------------
_BUSYBOX = Path("/bin/busybox")
_DROPBEAR_BINARIES = {  # host path -> path in the image
    Path("/usr/sbin/dropbear"): "usr/sbin/dropbear",
    Path("/usr/bin/dropbearkey"): "usr/bin/dropbearkey",
    Path("/usr/lib/dropbear/dropbearconvert"): "usr/bin/dropbearconvert",
    Path("/usr/lib/openssh/sftp-server"): "usr/lib/sftp-server",  # dropbear's SFTP path
}
_EXTRA_LIBS = (Path("/lib/x86_64-linux-gnu/libnss_files.so.2"),)


def _fast_recipe() -> bytes:
    binaries = [_BUSYBOX, *_DROPBEAR_BINARIES, *_EXTRA_LIBS]
    libs = sorted({lib for b in _DROPBEAR_BINARIES if b.exists() for lib in _ldd(b)})
    return _recipe(_FORMAT, "fast", str(FAST_DISK_MIB), str(FAST_MIN_MEMORY_MIB),
                   " ".join(FAST_MODULES), FAST_INITRAMFS_INIT, FAST_INITTAB, FAST_SHUTDOWN,
                   FAST_POWER_BUTTON, FAST_CLOUD_INIT_STUB, FAST_SUDO_STUB, FAST_PROFILE,
                   FAST_RC, SEED_YAML_AWK, UDHCPC_SCRIPT, *_grub_recipe(),
                   *(f"{p}={_file_digest(p)}" for p in [*binaries, *map(Path, libs)]),
                   *_sources(_build_fast, _assemble_fast_root, _module_order, _fast_initramfs,
                             NewcWriter))


def _ldd(binary: Path) -> list[str]:
    """Absolute paths of the shared libraries (and the loader) ``binary`` needs."""
    out = _run(["ldd", str(binary)])
    return re.findall(r"(/\S+)\s+\(0x", out)


def _build_fast(work: Path, out: Path) -> dict[str, Any]:
    """Fetch the kernel, assemble busybox + dropbear + init, make the bootable qcow2."""
    for binary in (_BUSYBOX, *_DROPBEAR_BINARIES):
        if not binary.is_file():
            raise RuntimeError(f"{binary} missing: apt-get install busybox-static "
                               "dropbear-bin openssh-sftp-server")
    package = resolve_kernel_package()
    kver = package.removeprefix("linux-image-")
    dl = work / "kernel"
    dl.mkdir()
    _run(["apt-get", "download", "-o", "APT::Sandbox::User=root", package], cwd=dl)
    debs = sorted(dl.glob(f"{package}_*.deb"))
    if not debs:
        raise RuntimeError(f"apt-get download {package} produced no .deb")
    kroot = dl / "root"
    _run(["dpkg-deb", "-x", str(debs[0]), str(kroot)])
    root = work / "root"
    _assemble_fast_root(root, kroot, kver)
    fs_uuid = str(uuid.uuid4())
    qcow2 = out / "fast.qcow2"
    size = _make_bootable_qcow2(root, work, qcow2, FAST_DISK_MIB, fs_uuid, "hvp fast image",
                                "/boot/vmlinuz", "/boot/initrd.img", "rw")
    banner = subprocess.run([str(_BUSYBOX)], capture_output=True, text=True, check=False)
    version = re.search(r"BusyBox v(\d+\.\d+)", banner.stdout + banner.stderr)
    index = _index("hvp-fast", "busybox", version.group(1) if version else "1",
                   ["busybox", "dropbear", "fast", "test"], max(1, FAST_DISK_MIB // 1024),
                   FAST_MIN_MEMORY_MIB, "root", qcow2,
                   "busybox + dropbear on the Debian kernel; applies a NoCloud seed itself")
    return {"qcow2": qcow2.name, "raw_size": size, "kernel_version": kver,
            "default_user": "root", "index": index}


def _assemble_fast_root(root: Path, kroot: Path, kver: str) -> None:
    """The fast image's root: busybox, dropbear (+ libraries), init scripts, kernel."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/lib/hvp", "etc/hvp", "etc/acpi/PWRF",
              "etc/dropbear", "etc/ssh", "dev", "proc", "sys", "run", "tmp", "mnt", "boot",
              "root", "home", "var/log", "var/lib/dpkg/info", "var/lib/cloud"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    bb = root / "bin" / "busybox"
    shutil.copyfile(_BUSYBOX, bb)
    bb.chmod(0o755)
    for applet in _run([str(_BUSYBOX), "--list-full"]).split():
        link = root / applet
        if link != bb and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/bin/busybox")
    libs: set[str] = set()
    for host, dest in _DROPBEAR_BINARIES.items():
        _copy(host, root / dest, 0o755)
        libs.update(_ldd(host))
    for lib in sorted(libs) + [str(p) for p in _EXTRA_LIBS if p.exists()]:
        _copy(Path(lib), root / lib.lstrip("/"), 0o755)
    files = {
        "etc/inittab": (FAST_INITTAB, 0o644),
        "etc/hvp/rc": (FAST_RC, 0o755),
        "etc/hvp/shutdown": (FAST_SHUTDOWN, 0o755),
        "etc/acpi/PWRF/00000080": (FAST_POWER_BUTTON, 0o755),
        "usr/lib/hvp/seedyaml.awk": (SEED_YAML_AWK, 0o644),
        "usr/lib/hvp/udhcpc.sh": (UDHCPC_SCRIPT, 0o755),
        "usr/bin/cloud-init": (FAST_CLOUD_INIT_STUB, 0o755),
        "usr/bin/sudo": (FAST_SUDO_STUB, 0o755),
        "etc/profile": (FAST_PROFILE, 0o644),
        "etc/hostname": ("hvp-fast\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost\n127.0.1.1 hvp-fast\n", 0o644),
        "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": ("root:x:0:\ntty:x:5:\n", 0o644),
        "etc/shadow": ("root:*:1:0:99999:7:::\n", 0o600),
        "etc/shells": ("/bin/sh\n/bin/ash\n", 0o644),
        "etc/nsswitch.conf": ("passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n",
                              0o644),
        "etc/resolv.conf": ("", 0o644),
        "var/lib/dpkg/status": ("", 0o644),
    }
    for rel, (text, mode) in files.items():
        path = root / rel
        path.write_text(text)
        path.chmod(mode)
    (root / "sbin" / "init").unlink(missing_ok=True)
    (root / "sbin" / "init").symlink_to("/bin/busybox")
    shutil.copyfile(kroot / "boot" / f"vmlinuz-{kver}", root / "boot" / "vmlinuz")
    modules = _module_order(kroot / "lib" / "modules" / kver, FAST_MODULES)
    (root / "boot" / "initrd.img").write_bytes(_fast_initramfs(modules))


def _copy(src: Path, dest: Path, mode: int) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)  # follows symlinks: the loader path gets the real file
    dest.chmod(mode)


def _module_order(moddir: Path, wanted: Iterable[str]) -> list[Path]:
    """``wanted`` modules that exist (built-ins are skipped) plus their dependencies, each
    after what it depends on (from the ``depends=`` field of each .ko's .modinfo)."""
    files = {ko.name.removesuffix(".ko").replace("-", "_"): ko
             for ko in (moddir / "kernel").rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in files:
            return
        seen.add(name)
        info = files[name].read_bytes()
        m = re.search(rb"(?:^|\x00)depends=([^\x00]*)", info)
        for dep in (m.group(1).decode().split(",") if m else []):
            if dep:
                visit(dep.replace("-", "_"))
        order.append(files[name])

    for name in wanted:
        visit(name)
    return order


def _fast_initramfs(modules: list[Path]) -> bytes:
    """gzip'ed newc cpio: busybox (+ the applets /init uses), /init, modules in order."""
    cpio = NewcWriter()
    for d in ("bin", "sbin", "dev", "proc", "sys", "newroot", "etc", "lib", "lib/modules"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3, 0o666)
    cpio.file("bin/busybox", _BUSYBOX.read_bytes(), 0o755)
    for applet in ("sh", "mount", "insmod", "findfs", "sleep", "cat", "dmesg", "mkdir",
                   "switch_root", "echo"):
        cpio.symlink(f"bin/{applet}", "busybox")
    cpio.file("init", FAST_INITRAMFS_INIT.encode(), 0o755)
    names = []
    for ko in modules:
        name = ko.name.removesuffix(".ko")
        cpio.file(f"lib/modules/{name}.ko", ko.read_bytes())
        names.append(name)
    cpio.file("etc/modules.order", ("\n".join(names) + "\n").encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)
