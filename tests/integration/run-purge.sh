#!/usr/bin/env bash
# Flush-then-restore at the state limit against an emulated host's daemon, which frees removed
# states only at NetBSD's purge cadence (1 + states / 10 a second, never while locked): the restore
# must wait for the purge with the table unlocked and reject nothing (docs/reliability.md, P1 on a
# real process). Local-flavour fleet of one host on the system clock; torn down on exit.
#
#   tests/integration/run-purge.sh [COLLECTIONS_PATH]
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fleet_dir=$repo/tests/output/pfemu-purge
collections=$(collections_path run-purge "${1:-}")

fleet_up "$fleet_dir" 1 --flavour local --states 2000 --limit 2000 --clock system >/dev/null
fleet_playbook "$fleet_dir" "$repo/tests/integration/purge/flush-restore.yml" | sed -n '/"msg"/p'
echo "run-purge: ok"
