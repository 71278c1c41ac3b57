#!/usr/bin/env bash
# End to end: a restore after a reboot that drew a new pf hostid, with real ansible-playbook
# over an ssh fleet (tests/integration/hostid/hostid.yml). Stock NetBSD draws a new hostid at
# every boot unless pf.conf sets one; so does every emulated host of a fleet by default.
#
#   tests/integration/run-hostid.sh [COLLECTIONS_PATH]
#
# Root needed for the ssh fleet (network namespaces, sshd); PFEMU_FLAVOUR=local runs the same
# test without them. Environment: PFEMU_STATES (default 300) states per host, VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

flavour=${PFEMU_FLAVOUR:-ssh}
states=${PFEMU_STATES:-300}
fleet_dir=$repo/tests/output/pfemu-hostid

collections=$(collections_path run-hostid "${1:-}")

if [ "$flavour" = ssh ]; then
    fleet_up "$fleet_dir" 2 --flavour ssh --paramiko-hosts 1 --states "$states" --seed 5
else
    fleet_up "$fleet_dir" 2 --flavour local --states "$states" --seed 5
fi

fleet_playbook "$fleet_dir" "$repo/tests/integration/hostid/hostid.yml"
