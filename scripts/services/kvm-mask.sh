# Sourced by libvirtd.sh and libvirtd2.sh: whether libvirtd must not see /dev/kvm.
#
# When /dev/kvm exists but the user QEMU runs as cannot open it, libvirt 9.0 still sees
# KVM while probing and re-probes QEMU on every API call (see libvirtd.sh's header).
# HVP_LIBVIRTD_MASK_KVM=auto (default) | 1 (always mask) | 0 (never mask).

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
        0) return 1 ;;
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
