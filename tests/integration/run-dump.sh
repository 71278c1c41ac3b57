#!/usr/bin/env bash
# End-to-end test of states_dump/states_info/states_lock/states_convert with real
# ansible-playbook against a local fleet of 2 emulated hosts (a few thousand states each).
#
#   tests/integration/run-dump.sh [COLLECTIONS_PATH]
#
# Environment: PFEMU_STATES (default 3000) states per host; VENV (default .venv).
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

states=${PFEMU_STATES:-3000}
work=$repo/tests/output/dump
fleet_dir=$work/fleet

collections=$(collections_path run-dump "${1:-}")

rm -rf "$work/captures"
fleet_up "$fleet_dir" 2 --flavour local --states "$states" --seed 7

cat > "$work/pfemu-ctl" <<CTL
#!/bin/sh
cd "$repo" && exec "$venv/bin/python" -m tests.pfemu ctl --dir "$fleet_dir" "\$@"
CTL
chmod 0755 "$work/pfemu-ctl"

fleet_playbook "$fleet_dir" \
    -e "fetch_root=$work/captures" -e "controller_python=$venv/bin/python" -e "pfemu_ctl=$work/pfemu-ctl" \
    "$repo/tests/integration/dump/dump.yml"

# fetch_to must have produced private directories and files.
find "$work/captures" -mindepth 1 -type d ! -perm 0700 -print | grep . && { echo "run-dump: a capture directory is not 0700" >&2; exit 1; }
find "$work/captures" -name 'states.*' -type f ! -perm 0600 -print | grep . && { echo "run-dump: a fetched dump is not 0600" >&2; exit 1; }
echo "run-dump: ok"
