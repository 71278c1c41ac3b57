#!/usr/bin/env bash
# Compatibility run: the newest ansible-core (requirements-compat.txt) on the
# newest Python it supports that this machine has (3.13, else 3.12), besides the
# pinned ansible-core 2.19 on Python 3.11 that the other tiers use.
#
#   1. the unit tests with plain pytest, the collection imported from the copy
#      in build/ansible_collections/netbsd/pf (make copy);
#   2. the end-to-end smoke playbook (tests/integration/smoke.yml) against a
#      local-flavour emulated fleet, with this ansible-core. The local flavour
#      needs neither root nor sshd; it also avoids the paramiko connection
#      plugin, which ansible-core 2.21 no longer has (run-smoke.sh tests it
#      under 2.19).
#
# The virtualenv .venv-compat is created on first use and refreshed when
# requirements-compat.txt changes. Skips (exit 0, "SKIP compat: ...") when
# neither Python is present.
#
# Usage: tools/compat.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv-compat
copy_parent=$root/build
copy=$copy_parent/ansible_collections/netbsd/pf

python=
for version in 3.13 3.12; do
    for candidate in "$root/tools/bin/python$version" "/root/.pyenv/versions/$version"*/bin/"python$version"; do
        if [ -x "$candidate" ]; then python=$candidate; break 2; fi
    done
done
if [ -z "$python" ]; then
    echo "SKIP compat: no Python 3.13 or 3.12 on this machine"
    exit 0
fi

"$root/tools/ensure-venv.sh" "$venv" "$python" "$root/requirements-compat.txt"
"$venv/bin/python" -c 'import sys, ansible.release
print("ansible-core %s on Python %s" % (ansible.release.__version__, sys.version.split()[0]))'

echo "--- unit tests (pytest, ansible-core from .venv-compat)"
# importlib mode: test files in different directories may share a basename.
(cd "$copy" && PYTHONPATH=$copy_parent "$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --import-mode=importlib tests/unit)

echo "--- end to end: tests/integration/smoke.yml on a local-flavour emulated fleet"
# One host per Python 3.8-3.13; the play runs on those this ansible-core still
# supports as targets (2.20 and later need 3.9).
fleet_dir=$root/tests/output/compat-fleet
pfemu() { (cd "$root" && "$venv/bin/python" -m tests.pfemu "$@"); }
trap 'pfemu fleet down --dir "$fleet_dir"' EXIT
pfemu fleet up 6 --flavour local --states 200 --seed 1 --dir "$fleet_dir"
targets=$("$venv/bin/python" - "$fleet_dir/inventory/hosts.yml" <<'PYTHON'
import sys
import yaml
from ansible.module_utils.basic import _PY_MIN
hosts = yaml.safe_load(open(sys.argv[1]))["all"]["children"]["pfemu"]["hosts"]
print(",".join(name for name, host in sorted(hosts.items())
               if tuple(int(part) for part in host["pfemu_python"][len("python"):].split(".")) >= _PY_MIN))
PYTHON
)
echo "targets whose Python this ansible-core supports: $targets"
ANSIBLE_COLLECTIONS_PATH=$copy_parent ANSIBLE_NOCOLOR=1 \
    "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" --limit "$targets" "$root/tests/integration/smoke.yml"
