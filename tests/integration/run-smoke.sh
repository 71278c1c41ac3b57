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

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

flavour=${PFEMU_FLAVOUR:-ssh}
states=${PFEMU_STATES:-200}
fleet_dir=$repo/tests/output/pfemu-smoke

collections=$(collections_path run-smoke "${1:-}")

# The shim <-> daemon transport on the oldest and newest host Pythons (local fleet, seconds).
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/integration/test_pfemu_transport.py"

if [ "$flavour" = ssh ]; then
    fleet_up "$fleet_dir" 3 --flavour ssh --paramiko-hosts 1 --states "$states" --seed 1
else
    fleet_up "$fleet_dir" 3 --flavour local --states "$states" --seed 1
fi

fleet_playbook "$fleet_dir" "$repo/tests/integration/smoke.yml"
