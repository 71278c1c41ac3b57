# shellcheck shell=bash
# Shared by the tests/integration/run-*.sh scripts; source it after `set -euo pipefail`.
# Sets repo (the collection's root) and venv ($VENV, default .venv) and defines the helpers below.

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}

# pfemu ARGS...: the emulator's command line (python -m tests.pfemu), run from the repo root.
pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }

# collections_path SCRIPT [COLLECTIONS_PATH]: print the directory holding ansible_collections/netbsd/pf
# (tools/collections-path.sh decides); exits 2 naming SCRIPT when there is none.
collections_path() {
    local script=$1 found
    found=$("$repo/tools/collections-path.sh" "${2:-}" 2>&1) || { echo "$script: $found" >&2; exit 2; }
    echo "$found"
}

# fleet_up DIR ARGS...: `pfemu fleet up ARGS...` in DIR, torn down when the script exits, also after a failure.
fleet_up() {
    local dir=$1
    shift
    # shellcheck disable=SC2064  # DIR is fixed now, on purpose
    trap "pfemu fleet down --dir $(printf %q "$dir")" EXIT
    pfemu fleet up "$@" --dir "$dir"
}

# fleet_playbook DIR ARGS...: ansible-playbook ARGS... against the fleet in DIR, with the collection
# found by collections_path (in $collections).
fleet_playbook() {
    local dir=$1
    shift
    # shellcheck disable=SC2154  # collections: set by the sourcing script from collections_path
    ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_NOCOLOR=1 "$venv/bin/ansible-playbook" -i "$dir/inventory/hosts.yml" "$@"
}
