# Sourced by libvirtd.sh and libvirtd2.sh: whether libvirtd must not see /dev/kvm.
#
# When /dev/kvm exists but the user QEMU runs as cannot open it, libvirt 9.0 still sees
# KVM while probing and re-probes QEMU on every API call (see libvirtd.sh's header).
# HVP_LIBVIRTD_MASK_KVM=auto (default) | 1 (always mask) | 0 (never mask).
# libvirtd2.sh also takes "open" (see kvm_device_file) to force the other kind of host.

# qemu_user: the user libvirt runs QEMU as (qemu.conf `user`, else libvirt-qemu).
qemu_user() {
    local user=""
    if [[ -r /etc/libvirt/qemu.conf ]]; then
        user="$(sed -n 's/^[[:space:]]*user[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' \
            /etc/libvirt/qemu.conf | tail -n 1)"
    fi
    echo "${user:-libvirt-qemu}"
}

# kvm_mask_needed: true when libvirtd must not see /dev/kvm.
kvm_mask_needed() {
    local mode="${HVP_LIBVIRTD_MASK_KVM:-auto}" user
    case "$mode" in
        1) return 0 ;;
        0 | open) return 1 ;;
    esac
    [[ -c /dev/kvm ]] || return 1
    user="$(qemu_user)"
    user="${user#+}"
    [[ "$user" == root || "$user" == 0 ]] && return 1
    id -u "$user" >/dev/null 2>&1 || return 1
    command -v setpriv >/dev/null 2>&1 || return 1
    ! setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups \
        test -r /dev/kvm -a -w /dev/kvm 2>/dev/null
}

# kvm_device_file KIND FILE: make FILE a stand-in for /dev/kvm, to bind-mount over it.
#   mask   an empty root-only file: QEMU and libvirt see no KVM (hosts where the QEMU
#          user cannot open /dev/kvm)
#   open   the real KVM device (10:232), root:kvm 0660: the QEMU user can open it, as on
#          hosts where KVM is offered but may still fail (MSR errors, emulated KVM)
#   broken a device that opens but is not KVM (/dev/null's 1:3), root:kvm 0660: every
#          KVM ioctl in QEMU fails ("KVM broke after libvirt probed it")
kvm_device_file() {
    local kind="$1" file="$2"
    rm -f "$file"
    case "$kind" in
        mask) : >"$file"; chmod 0600 "$file" ;;
        open) mknod "$file" c 10 232 ;;
        broken) mknod "$file" c 1 3 ;;
        *) echo "kvm_device_file: unknown kind $kind" >&2; return 2 ;;
    esac
    if [[ "$kind" != mask ]]; then
        chgrp kvm "$file" 2>/dev/null || chgrp "$(id -g "$(qemu_user)")" "$file"
        chmod 0660 "$file"
    fi
}
