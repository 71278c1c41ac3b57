#!/usr/bin/env bash
# Install the Debian packages that provide the given commands, if missing.
#
# Usage: tools/ensure-system-packages.sh COMMAND=PACKAGE...
# e.g.   tools/ensure-system-packages.sh sshd=openssh-server nc=netcat-openbsd
# Commands are looked up on PATH and in /usr/sbin and /sbin (sshd lives there).
set -euo pipefail

missing_packages=()
for pair in "$@"; do
    command_name="${pair%%=*}"
    package="${pair#*=}"
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$command_name" >/dev/null; then
        missing_packages+=("$package")
    fi
done

[ "${#missing_packages[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "Missing system packages: ${missing_packages[*]} (install them as root: apt-get install ${missing_packages[*]})" >&2
    exit 1
fi

echo "Installing system packages: ${missing_packages[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet, or stale ones.
if ! apt-get install -y -q --no-install-recommends "${missing_packages[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing_packages[@]}"
fi
