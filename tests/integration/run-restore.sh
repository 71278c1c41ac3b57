#!/usr/bin/env bash
# End to end: dump -> fetch -> reboot -> push from the controller -> restore, with real
# ansible-playbook against a local pfemu fleet (tests/integration/restore/restore.yml).
#
#   tests/integration/run-restore.sh [COLLECTIONS_PATH]
#
# Environment: PFEMU_STATES (default 500) states per host, PFEMU_HOSTS (default 2), VENV.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
states=${PFEMU_STATES:-500}
hosts=${PFEMU_HOSTS:-2}
fleet_dir=$repo/tests/output/pfemu-restore
work_dir=$repo/tests/output/restore-work

collections=${1:-${ANSIBLE_COLLECTIONS_PATH:-}}
if [ -z "$collections" ]; then
    if [ -d "$repo/build/ansible_collections/netbsd/pf" ]; then
        collections=$repo/build
    elif [ "$(basename "$(dirname "$(dirname "$repo")")")" = ansible_collections ]; then
        collections=$(dirname "$(dirname "$(dirname "$repo")")")
    else
        echo "run-restore: give a directory holding ansible_collections/netbsd/pf (argument or ANSIBLE_COLLECTIONS_PATH)" >&2
        exit 2
    fi
fi

pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }

trap 'pfemu fleet down --dir "$fleet_dir"' EXIT
rm -rf "$work_dir"
mkdir -p "$work_dir"
pfemu fleet up "$hosts" --flavour local --states "$states" --seed 7 --dir "$fleet_dir"

ANSIBLE_COLLECTIONS_PATH=$collections \
ANSIBLE_NOCOLOR=1 \
    "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" \
        -e restore_work_dir="$work_dir" "$repo/tests/integration/restore/restore.yml"
