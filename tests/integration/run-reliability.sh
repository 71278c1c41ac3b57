#!/usr/bin/env bash
# Reliability cases that need real processes (docs/reliability.md, rows K1, K2, D4, D6 and A4):
#   K1  the process holding the state lock is killed with SIGKILL: the lease watchdog unlocks;
#   K2  the controller dies while a play holds the lock (ansible-playbook killed): the lease unlocks;
#   D4  `pfstate lock` takes the lease over during a restore: the table stays locked under the new lease;
#   D6  two restores with different lease files at once: serialised, counts add up to what the table gained.
#   A4  SIGHUP to a dump holding the lock (lock=hold, as in a module whose connection dropped) while it writes:
#       unlocked and the lease released at once, no staged file left.
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

# pfstate ARGS...: the pfstate command of the emulated host fw1.
pfstate() {
    PYTHONPATH=$collections "$host_python" -c \
        'import sys; from ansible_collections.netbsd.pf.plugins.module_utils.pfstate_cli import main; sys.exit(main())' "$@"
}
# The states in the table (listed by DIOCGETSTATES), not the status count, which also holds the
# flushed states the purge has not freed yet.
table_size() { pfemu ctl --dir "$fleet_dir" fw1 status | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["linked_states"])'; }
flush_table() {
    PYTHONPATH=$collections "$host_python" -c \
        'from ansible_collections.netbsd.pf.plugins.module_utils.pfdev import PfDevice; PfDevice(writable=True).clear_states()'
}
restored_count() { sed -n 's/^\([0-9]*\) restored, .*/\1/p' "$1"; }

big=${RELIABILITY_RESTORE_STATES:-100000}
run_dir=$fleet_dir/hosts/fw1/var/run
restore_lock=$run_dir/netbsd_pf_restore.lock
dump=$fleet_dir/hosts/fw1/var/db/pfstate/big.pfstate
pfemu ctl --dir "$fleet_dir" fw1 limit $((big * 2)) >/dev/null
pfemu fill --dir "$fleet_dir" fw1 --states "$big" --seed 10 >/dev/null
pfstate -q dump --lock none "$dump"
flush_table

echo "--- D4: the lock taken over mid-restore"
lease_file=$run_dir/netbsd_pf_lock.lease
rm -f "$lease_file"
pfstate restore --age none --lease-file "$lease_file" --restore-lock-file "$restore_lock" "$dump" \
    >"$fleet_dir/d4-restore.out" 2>&1 &
restore=$!
wait_for locked 60 || fail "D4: the restore never locked the table"
pfstate lock --lease 300 --lease-file "$lease_file" || fail "D4: pfstate lock failed"
kill -0 "$restore" 2>/dev/null || fail "D4: the restore ended before the takeover; raise RELIABILITY_RESTORE_STATES"
wait "$restore" || fail "D4: the restore failed: $(cat "$fleet_dir/d4-restore.out")"
locked || fail "D4: the table is unlocked while the lease file says: $(cat "$lease_file")"
if ! grep -q '"holder": "pfstate"' "$lease_file" || ! grep -q '"state": "held"' "$lease_file"; then
    fail "D4: the new lease is not in force: $(cat "$lease_file")"
fi
grep -q "taken over" "$fleet_dir/d4-restore.out" || fail "D4: the restore does not say the lock was taken over"
echo "D4 ok: $(restored_count "$fleet_dir/d4-restore.out") restored; the table stays locked under pfstate's lease"
pfstate -q unlock --lease-file "$lease_file"
locked && fail "D4: pfstate unlock left the table locked"

echo "--- D6: two restores with different lease files at once"
flush_table
pfstate restore --age none --lease-file "$run_dir/A.lease" --restore-lock-file "$restore_lock" "$dump" \
    >"$fleet_dir/d6-a.out" 2>&1 &
first=$!
wait_for locked 60 || fail "D6: the first restore never locked the table"
pfstate restore --age none --lease-file "$run_dir/B.lease" --restore-lock-file "$restore_lock" "$dump" \
    >"$fleet_dir/d6-b.out" 2>&1 &
second=$!
wait "$first" || fail "D6: the first restore failed: $(cat "$fleet_dir/d6-a.out")"
wait "$second" || fail "D6: the second restore failed: $(cat "$fleet_dir/d6-b.out")"
a=$(restored_count "$fleet_dir/d6-a.out")
b=$(restored_count "$fleet_dir/d6-b.out")
gained=$(table_size)
[ "$((a + b))" -eq "$gained" ] || fail "D6: restores report $a + $b restored, the table gained $gained"
grep -q "^0 restored, $gained already present" "$fleet_dir/d6-b.out" \
    || fail "D6: the second restore did not wait for the first: $(cat "$fleet_dir/d6-b.out")"
echo "D6 ok: $a + $b restored = $gained states gained; the second restore waited for the first"

echo "--- A4: SIGHUP to a lock=hold dump while it writes"
lease_file=$run_dir/A4.lease
dump_dir=$fleet_dir/hosts/fw1/var/db/pfstate/a4
mkdir -p "$dump_dir"
writing=$dump_dir/writing
# The module's code with the default signal actions, as in a module process (pfstate has handlers of its own);
# the write is held up so that the signal surely arrives while the table is locked and the file staged.
PYTHONPATH=$collections env --default-signal=HUP,TERM,INT "$host_python" - "$dump_dir/hold.pfstate" "$lease_file" "$writing" <<'PY' &
import sys, time
from ansible_collections.netbsd.pf.plugins.module_utils import operations
real_stage = operations.stage_dump
def slow_stage(path, fmt, blocks, *args, **kwargs):
    def slow_blocks():
        for block in blocks:
            yield block
            open(sys.argv[3], "w").close()
            time.sleep(60)
    return real_stage(path, fmt, slow_blocks(), *args, **kwargs)
operations.stage_dump = slow_stage
operations.dump_states(sys.argv[1], lock="hold", lease=300, lease_file=sys.argv[2])
PY
dumper=$!
deadline=$((SECONDS + 60))
while [ ! -e "$writing" ] && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
[ -e "$writing" ] || fail "A4: the dump never started writing"
locked || fail "A4: the table is not locked while the hold dump writes"
kill -HUP "$dumper"
started=$SECONDS
if wait "$dumper" 2>/dev/null; then fail "A4: the dump was not ended by SIGHUP"; fi
wait_for unlocked 5 || fail "A4: still locked 5 s after SIGHUP (lease 300 s): $(cat "$lease_file")"
grep -q '"state": "released"' "$lease_file" || fail "A4: the lease is not released: $(cat "$lease_file")"
left=$(find "$dump_dir" -name '*.tmp' | wc -l)
[ "$left" -eq 0 ] || fail "A4: $left staged file(s) left in $dump_dir"
echo "A4 ok: unlocked $((SECONDS - started)) s after SIGHUP, lease released, no staged file (lease 300 s)"
