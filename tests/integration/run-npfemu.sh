#!/usr/bin/env bash
# The emulated /dev/npf across processes (test_npfemu_transport.py): a local fleet of hosts running
# NPF, both firewalls and pf; client scripts run by the hosts' own Pythons save, reboot and
# restore NPF connections through the shim with the collection's NpfDevice. No root needed.
#
#   tests/integration/run-npfemu.sh
# Environment: VENV (default .venv).
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/integration/test_npfemu_transport.py"
