#!/usr/bin/env bash
# Install the Debian packages given as arguments that are not installed yet.
# Quick and silent when everything is there; runs `apt-get update` at most once.
set -euo pipefail
missing=()
for pkg in "$@"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "install-debs: installing ${missing[*]}" >&2
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
APT=(apt-get -o DPkg::Lock::Timeout=900 -q)
$SUDO "${APT[@]}" update >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO "${APT[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
