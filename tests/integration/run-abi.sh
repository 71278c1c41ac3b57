#!/usr/bin/env bash
# End to end on real interpreters of other ABIs: fw1 with this machine's Python (lp64-le),
# fw2 with a 32-bit little-endian one (Debian i386, native) and fw3 with a 64-bit big-endian
# one (Debian s390x under qemu-user), each served by a kernel of its ABI. First raw ioctls
# (test_abi_hosts.py, local fleet), then on an ssh fleet: dump/reboot/restore field by field
# (restore/restore.yml), the reboot role (fw2 restoring from its rc.d script at boot) and a
# cross-endian migrate fw3 -> fw1, fw2 (abi/*.yml).
#
#   tests/integration/run-abi.sh [COLLECTIONS_PATH]
#
# The userlands are built once (mmdebstrap, Debian's packages) into PFEMU_USERLAND_CACHE
# (default ~/.cache/netbsd-pf/userlands). Where they cannot be built or run (no binfmt_misc,
# no mmdebstrap, not root) the script prints "SKIP abi: <reason>" and exits 0.
# Environment: PFEMU_STATES (default 300) states per host; VENV.
set -euo pipefail

# shellcheck source=tests/integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

states=${PFEMU_STATES:-300}
abis=ilp32-le,lp64-be
fleet_dir=$repo/tests/output/pfemu-abi
work_dir=$repo/tests/output/abi-work
cache_args=()
[ -n "${PFEMU_USERLAND_CACHE:-}" ] && cache_args=(--cache "$PFEMU_USERLAND_CACHE")

collections=$(collections_path run-abi "${1:-}")
started=$SECONDS

if [ "$(id -u)" -ne 0 ]; then
    echo "SKIP abi: needs root (mmdebstrap, chroot, binfmt_misc)"
    exit 0
fi
if ! "$repo/tools/ensure-system-packages.sh" mmdebstrap=mmdebstrap qemu-s390x-static=qemu-user-static \
        arch-test=arch-test sshd=openssh-server nc=netcat-openbsd ip=iproute2; then
    echo "SKIP abi: the Debian packages mmdebstrap, qemu-user-static and arch-test cannot be installed"
    exit 0
fi
status=0
pfemu userland ${abis//,/ } "${cache_args[@]}" || status=$?
if [ "$status" -eq 3 ]; then
    echo "SKIP abi: the userlands of $abis cannot be built or run here (reason above)"
    exit 0
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi
echo "run-abi: userlands ready after $((SECONDS - started)) s"

# Raw ioctls from the i386 and s390x Pythons against kernels of their ABI (local fleet).
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests/integration/test_abi_hosts.py"

rm -rf "$work_dir"
mkdir -p "$work_dir"
cache_option=()
[ -n "${PFEMU_USERLAND_CACHE:-}" ] && cache_option=(--userland-cache "$PFEMU_USERLAND_CACHE")
fleet_up "$fleet_dir" 3 --flavour ssh --states "$states" --seed 11 --abi-hosts "$abis" "${cache_option[@]}"

# Every host reports the ABI its inventory promises, from its own interpreter over ssh.
probe='import ctypes, sys; print("lp64" if ctypes.sizeof(ctypes.c_void_p) == 8 else "ilp32", sys.byteorder)'
ANSIBLE_COLLECTIONS_PATH=$collections "$venv/bin/ansible" -i "$fleet_dir/inventory/hosts.yml" pfemu -m ansible.builtin.shell \
    -a "echo ABI {{ inventory_hostname }} {{ pfemu_abi }} \$({{ ansible_python_interpreter }} -c '$probe')" \
    | tee "$work_dir/abis.txt"
for expected in "fw1 lp64-le lp64 little" "fw2 ilp32-le ilp32 little" "fw3 lp64-be lp64 big"; do
    grep -qx "ABI $expected" "$work_dir/abis.txt" || { echo "run-abi: no 'ABI $expected'" >&2; exit 1; }
done

common=(-e "abi_work_dir=$work_dir" -e "abi_fleet_states=$states")
# One round trip per module (the module goes to the interpreter's stdin, through the wrapper too).
export ANSIBLE_PIPELINING=True
step=$SECONDS
fleet_playbook "$fleet_dir" -e restore_work_dir="$work_dir/restore" "$repo/tests/integration/restore/restore.yml"
echo "run-abi: dump, reboot, restore in $((SECONDS - step)) s"

# restore.yml leaves the tables empty. A seed per host: the same seed makes the same connections,
# whose keys would collide on the destinations of the migrate.
for index in 1 2 3; do
    pfemu fill "fw$index" --states "$states" --seed "$((20 + index))" --dir "$fleet_dir" >/dev/null
done
step=$SECONDS
fleet_playbook "$fleet_dir" "${common[@]}" -e abi_restore_at_boot=fw2 "$repo/tests/integration/abi/reboot.yml"
echo "run-abi: reboot role in $((SECONDS - step)) s"

step=$SECONDS
fleet_playbook "$fleet_dir" "${common[@]}" -e abi_source=fw3 \
    -e abi_compare_states="$repo/tests/integration/restore/compare_states.py" "$repo/tests/integration/abi/migrate.yml"
echo "run-abi: cross-endian migrate in $((SECONDS - step)) s"
echo "run-abi: ok in $((SECONDS - started)) s"
