#!/usr/bin/env bash
# End to end: every role with --check, then with --check --diff, on an ssh fleet of 3 hosts
# (tests/integration/checkmode/checkmode.yml). Each role must run to the end and report what it
# would do, and nothing may change anywhere: no state table, lock, lease or file on the hosts,
# no capture, report or link on the controller. Then a failure path: the reboot role whose reboot
# command does not reboot unlocks the table in its rescue (tests/integration/checkmode/reboot_fails.yml).
#
#   tests/integration/run-checkmode.sh [COLLECTIONS_PATH]
#
# Root needed for the ssh fleet (network namespaces, sshd); PFEMU_FLAVOUR=local runs it without.
# Environment: PFEMU_STATES (default 200) states per host, VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

flavour=${PFEMU_FLAVOUR:-ssh}
states=${PFEMU_STATES:-200}
fleet_dir=$repo/tests/output/pfemu-checkmode
playbooks=$repo/tests/integration/checkmode

collections=$(collections_path run-checkmode "${1:-}")

if [ "$flavour" = ssh ]; then
    fleet_up "$fleet_dir" 3 --flavour ssh --paramiko-hosts 1 --states "$states" --seed 12
else
    fleet_up "$fleet_dir" 3 --flavour local --states "$states" --seed 12
fi

fleet_playbook "$fleet_dir" "$playbooks/setup.yml"

# Everything check mode must leave alone: each host's table (pfs text), lock, boot time and
# refusals; every file of the hosts (but the daemon's run/, sshd's ssh/ and Ansible's tmp/) and of the
# controller's captures, with size, mode, time and link target; the playbook directory.
snapshot() {
    local host
    for host in fw1 fw2 fw3; do
        echo "== $host"
        ANSIBLE_COLLECTIONS_PATH=$collections pfemu fleet states "$host" --dir "$fleet_dir"
    done
    pfemu fleet status --dir "$fleet_dir" | "$venv/bin/python" -c '
import json, sys
for host in json.load(sys.stdin)["hosts"]:
    print(host["name"], "lock", host["lock"], "boot", host["boot_time"], "states", host["states"], "refusals", host["refusals"])'
    find "$fleet_dir/hosts" "$fleet_dir/captures" "$playbooks" \
        \( -path "$fleet_dir/hosts/*/run" -o -path "$fleet_dir/hosts/*/tmp" -o -path "$fleet_dir/hosts/*/venv" -o -path "$fleet_dir/hosts/*/ssh" \) -prune \
        -o -printf '%p %y %s %m %T@ %l\n' | sort
}

snapshot > "$fleet_dir/before.txt"
grep -q '^state ' "$fleet_dir/before.txt" || { echo "run-checkmode: the snapshot shows no state" >&2; exit 1; }

for mode in --check "--check --diff"; do
    # shellcheck disable=SC2086  # two words on purpose
    fleet_playbook "$fleet_dir" $mode "$playbooks/checkmode.yml"
    snapshot > "$fleet_dir/after.txt"
    if ! diff -u "$fleet_dir/before.txt" "$fleet_dir/after.txt"; then
        echo "run-checkmode: ansible-playbook $mode changed something (diff above)" >&2
        exit 1
    fi
done

# A failure path: a reboot that never happens unlocks the table at once.
fleet_playbook "$fleet_dir" "$playbooks/reboot_fails.yml"
echo "run-checkmode: ok"
