#!/usr/bin/env bash
# End to end: ansible.builtin.reboot with its defaults (no reboot_command, no boot_time_command)
# on an ssh fleet reboots the emulated hosts only (tests/integration/reboot/builtin_reboot.yml).
#
#   tests/integration/run-reboot-builtin.sh [COLLECTIONS_PATH]
#
# Root needed (network namespaces, mount namespaces, sshd). Environment: VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

fleet_dir=$repo/tests/output/pfemu-reboot-builtin
collections=$(collections_path run-reboot-builtin "${1:-}")

fleet_up "$fleet_dir" 2 --flavour ssh --paramiko-hosts 1 --states 50 --seed 3
fleet_playbook "$fleet_dir" "$repo/tests/integration/reboot/builtin_reboot.yml"
echo "run-reboot-builtin: ok"
