#!/usr/bin/env bash
# ansible-test units in the collection copy, each test on the Pythons its code runs on.
#
# plugins/modules and plugins/module_utils run on the firewalls (Python 3.8 and
# later): tests/unit/plugins/modules/ and module_utils/ run on every target
# Python, where ansible-test hides the controller half of ansible-core from
# them.  Every other unit test is controller code (action plugins, the pf
# emulator, the reliability matrix) and runs once, on the controller Python.
#
# Usage: tools/run-units.sh COPY CONTROLLER_VERSION TARGET_VERSION...
#   e.g. tools/run-units.sh build/ansible_collections/netbsd/pf 3.11 3.8 3.9 3.13
# ANSIBLE_TEST_OPTIONS (default --color no) go to every ansible-test call.
# Prints "SKIP units: ..." when tests/unit/ holds no test yet.
set -euo pipefail

copy=$1 controller=$2
shift 2
read -r -a options <<< "${ANSIBLE_TEST_OPTIONS:---color no}"
options+=(--controller "origin:python=venv/$controller")
target_side=(tests/unit/plugins/modules/ tests/unit/plugins/module_utils/)

cd "$copy"
log=tests/output/units-run.log
mkdir -p tests/output
echo "--- all unit tests on Python $controller"
ansible-test units "${options[@]}" --target-python "venv/$controller" 2>&1 | tee "$log"

versions=() targets=()
for version in "$@"; do
    if [ "$version" != "$controller" ]; then versions+=("$version"); targets+=(--target-python "venv/$version"); fi
done
present=()
for directory in "${target_side[@]}"; do
    if [ -d "$directory" ]; then present+=("$directory"); fi
done
if [ "${#targets[@]}" -ne 0 ] && [ "${#present[@]}" -ne 0 ]; then
    echo "--- ${present[*]} on Python ${versions[*]}"
    ansible-test units "${options[@]}" "${targets[@]}" "${present[@]}" 2>&1 | tee -a "$log"
fi

if grep -q "All targets skipped" "$log"; then echo "SKIP units: no unit tests in tests/unit/ yet"; fi
