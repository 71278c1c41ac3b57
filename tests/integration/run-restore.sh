#!/usr/bin/env bash
# End to end: dump -> fetch -> reboot -> push from the controller -> restore, with real
# ansible-playbook against a local pfemu fleet (tests/integration/restore/restore.yml).
#
#   tests/integration/run-restore.sh [COLLECTIONS_PATH]
#
# Environment: PFEMU_STATES (default 500) states per host, PFEMU_HOSTS (default 2), VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

states=${PFEMU_STATES:-500}
hosts=${PFEMU_HOSTS:-2}
fleet_dir=$repo/tests/output/pfemu-restore
work_dir=$repo/tests/output/restore-work

collections=$(collections_path run-restore "${1:-}")

rm -rf "$work_dir"
mkdir -p "$work_dir"
fleet_up "$fleet_dir" "$hosts" --flavour local --states "$states" --seed 7

fleet_playbook "$fleet_dir" -e restore_work_dir="$work_dir" "$repo/tests/integration/restore/restore.yml"
