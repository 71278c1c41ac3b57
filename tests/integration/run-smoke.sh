#!/usr/bin/env bash
# Smoke test of the emulated NetBSD firewalls over real ssh.
#
#   tests/integration/run-smoke.sh [COLLECTIONS_PATH]
#
# Checks the emulator's transport (test_pfemu_transport.py), brings up an ssh fleet of 3 hosts (2 OpenSSH, 1 paramiko_ssh; root needed:
# network namespaces and sshd), runs tests/integration/smoke.yml against it and
# tears the fleet down on exit, also after a failure.
#
# COLLECTIONS_PATH (or $ANSIBLE_COLLECTIONS_PATH) is a directory holding
# ansible_collections/netbsd/pf; default: build/ (the Makefile's copy) if there,
# else the collections tree this checkout sits in.
# Environment: PFEMU_FLAVOUR=local runs the same test without root or sshd;
# PFEMU_STATES (default 200) states per host; VENV (default .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
flavour=${PFEMU_FLAVOUR:-ssh}
states=${PFEMU_STATES:-200}
fleet_dir=$repo/tests/output/pfemu-smoke

collections=${1:-${ANSIBLE_COLLECTIONS_PATH:-}}
if [ -z "$collections" ]; then
    if [ -d "$repo/build/ansible_collections/netbsd/pf" ]; then
        collections=$repo/build
    elif [ "$(basename "$(dirname "$(dirname "$repo")")")" = ansible_collections ]; then
        collections=$(dirname "$(dirname "$(dirname "$repo")")")
    else
        echo "run-smoke: give a directory holding ansible_collections/netbsd/pf (argument or ANSIBLE_COLLECTIONS_PATH)" >&2
        exit 2
    fi
fi
if [ ! -d "$collections/ansible_collections/netbsd/pf" ]; then
    echo "run-smoke: no ansible_collections/netbsd/pf in $collections" >&2
    exit 2
fi

pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }

# The shim <-> daemon transport on the oldest and newest host Pythons (local fleet, seconds).
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/integration/test_pfemu_transport.py"

trap 'pfemu fleet down --dir "$fleet_dir"' EXIT
if [ "$flavour" = ssh ]; then
    pfemu fleet up 3 --flavour ssh --paramiko-hosts 1 --states "$states" --seed 1 --dir "$fleet_dir"
else
    pfemu fleet up 3 --flavour local --states "$states" --seed 1 --dir "$fleet_dir"
fi

ANSIBLE_COLLECTIONS_PATH=$collections \
ANSIBLE_NOCOLOR=1 \
    "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" "$repo/tests/integration/smoke.yml"
