#!/usr/bin/env bash
# NPF end to end with real ansible-playbook over an ssh fleet (tests/integration/npf/npf.yml):
# an NPF host's connections survive a reboot (dump, reboot, restore, compared field by field),
# and a pf host's states migrate to an NPF host (every convertible one kept, every other named);
# then the reboot, capture and migrate roles on the same hosts (tests/integration/npf/roles.yml).
#
#   tests/integration/run-npf.sh [COLLECTIONS_PATH]
#
# Root needed (network namespaces, sshd). Environment: NPF_CONNECTIONS (default 60), VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

connections=${NPF_CONNECTIONS:-60}
# shellcheck disable=SC2154  # repo: set by lib.sh
fleet_dir=$repo/tests/output/pfemu-npf
work_dir=$repo/tests/output/npf-work
# shellcheck disable=SC2034  # collections: read by lib.sh's fleet_playbook
collections=$(collections_path run-npf "${1:-}")

rm -rf "$work_dir"
mkdir -p "$work_dir"
fleet_up "$fleet_dir" 3 --flavour ssh --firewall npf,npf,pf --states 200 --seed 11
pfemu ctl --dir "$fleet_dir" fw1 npf-fill "$connections" --seed 5
fleet_playbook "$fleet_dir" -e npf_work_dir="$work_dir" -e npf_connections="$connections" \
    "$repo/tests/integration/npf/npf.yml"
fleet_playbook "$fleet_dir" -e npf_work_dir="$work_dir" "$repo/tests/integration/npf/roles.yml"
echo "run-npf: ok"
