#!/usr/bin/env bash
# Reliability cases that need real processes (docs/reliability.md, rows K1 and K2):
#   K1  the process holding the state lock is killed with SIGKILL: the lease watchdog unlocks;
#   K2  the controller dies while a play holds the lock (ansible-playbook killed): the lease unlocks.
# Local-flavour fleet of one emulated host (no root needed); torn down on exit.
#
#   tests/integration/run-reliability.sh [COLLECTIONS_PATH]
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fleet_dir=$repo/tests/output/pfemu-reliability
lease=4
collections=$(collections_path run-reliability "${1:-}")

locked() { pfemu ctl --dir "$fleet_dir" fw1 status | "$venv/bin/python" -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["lock"] else 1)'; }
wait_for() {    # wait_for locked|unlocked SECONDS
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        if [ "$1" = locked ] && locked; then return 0; fi
        if [ "$1" = unlocked ] && ! locked; then return 0; fi
        sleep 0.5
    done
    return 1
}
fail() { echo "FAIL: $*" >&2; exit 1; }

trap 'pfemu fleet down --dir "$fleet_dir" >/dev/null' EXIT
pfemu fleet up 1 --flavour local --states 200 --clock system --dir "$fleet_dir" >/dev/null
host_python=$fleet_dir/hosts/fw1/venv/bin/python
lease_file=$fleet_dir/hosts/fw1/var/db/pfstate/lock.lease
mkdir -p "$(dirname "$lease_file")"

echo "--- K1: SIGKILL of the lock holder"
PYTHONPATH=$collections "$host_python" - "$lease_file" "$lease" <<'PY' &
import sys, time
from ansible_collections.netbsd.pf.plugins.module_utils.operations import lock_table
lock_table("/dev/pf", int(sys.argv[2]), sys.argv[1], holder="run-reliability K1")
time.sleep(120)
PY
holder=$!
wait_for locked 20 || fail "K1: the table never got locked"
started=$SECONDS
kill -KILL "$holder"
wait "$holder" 2>/dev/null || true
wait_for unlocked $((lease + 15)) || fail "K1: still locked $((lease + 15)) s after SIGKILL"
grep -q '"expired"' "$lease_file" || fail "K1: lease file does not say expired: $(cat "$lease_file")"
echo "K1 ok: unlocked by the lease watchdog $((SECONDS - started)) s after SIGKILL (lease ${lease} s)"

echo "--- K2: controller killed during a held lock"
rm -f "$lease_file"
ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_NOCOLOR=1 \
    setsid "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" -e reliability_lease=$lease \
    "$repo/tests/integration/reliability/hold_lock.yml" >"$fleet_dir/k2-playbook.log" 2>&1 &
playbook=$!
wait_for locked 60 || fail "K2: the table never got locked (see $fleet_dir/k2-playbook.log)"
started=$SECONDS
kill -KILL -- "-$playbook"      # the whole session: controller and its workers
wait "$playbook" 2>/dev/null || true
wait_for unlocked $((lease + 15)) || fail "K2: still locked $((lease + 15)) s after the controller died"
grep -q '"expired"' "$lease_file" || fail "K2: lease file does not say expired: $(cat "$lease_file")"
echo "K2 ok: unlocked by the lease watchdog $((SECONDS - started)) s after the controller was killed (lease ${lease} s)"
