#!/usr/bin/env bash
# End-to-end test of states_dump/states_info/states_lock/states_convert with real
# ansible-playbook against a local fleet of 2 emulated hosts (a few thousand states each).
#
#   tests/integration/run-dump.sh [COLLECTIONS_PATH]
#
# Environment: PFEMU_STATES (default 3000) states per host; VENV (default .venv).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
states=${PFEMU_STATES:-3000}
work=$repo/tests/output/dump
fleet_dir=$work/fleet

collections=${1:-${ANSIBLE_COLLECTIONS_PATH:-}}
if [ -z "$collections" ]; then
    if [ -d "$repo/build/ansible_collections/netbsd/pf" ]; then
        collections=$repo/build
    elif [ "$(basename "$(dirname "$(dirname "$repo")")")" = ansible_collections ]; then
        collections=$(dirname "$(dirname "$(dirname "$repo")")")
    else
        echo "run-dump: give a directory holding ansible_collections/netbsd/pf (argument or ANSIBLE_COLLECTIONS_PATH)" >&2
        exit 2
    fi
fi

pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }

trap 'pfemu fleet down --dir "$fleet_dir"' EXIT
rm -rf "$work/captures"
pfemu fleet up 2 --flavour local --states "$states" --seed 7 --dir "$fleet_dir"

cat > "$work/pfemu-ctl" <<CTL
#!/bin/sh
cd "$repo" && exec "$venv/bin/python" -m tests.pfemu ctl --dir "$fleet_dir" "\$@"
CTL
chmod 0755 "$work/pfemu-ctl"

ANSIBLE_COLLECTIONS_PATH=$collections \
ANSIBLE_NOCOLOR=1 \
    "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" \
    -e "fetch_root=$work/captures" -e "controller_python=$venv/bin/python" -e "pfemu_ctl=$work/pfemu-ctl" \
    "$repo/tests/integration/dump/dump.yml"

# fetch_to must have produced private directories and files.
find "$work/captures" -mindepth 1 -type d ! -perm 0700 -print | grep . && { echo "run-dump: a capture directory is not 0700" >&2; exit 1; }
find "$work/captures" -name 'states.*' -type f ! -perm 0600 -print | grep . && { echo "run-dump: a fetched dump is not 0600" >&2; exit 1; }
echo "run-dump: ok"
