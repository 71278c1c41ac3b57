#!/usr/bin/env bash
# make demo: three emulated NetBSD firewalls with a few thousand pf states each are captured,
# rebooted one after the other and given their states back, with the netbsd.pf roles.
# Runs as an ordinary user, needs only the project venv on PATH (python, ansible-playbook),
# leaves nothing running, exits non-zero on any failure. Output: tests/output/demo/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=$root/tests/output/demo
fleet=$work/fleet
hosts=3
states=${DEMO_STATES:-3000}
started=$SECONDS

step() { printf '\n==> %s\n' "$*"; }
# What the demo prints names files relative to the checkout (tests/output/demo/...).
relative() { sed "s#$root/##g"; }
fail() { printf '\ndemo FAILED: %s\n' "$*" >&2; exit 1; }

teardown() {
    local status=$?
    step "Tearing the fleet down"
    python -m tests.pfemu fleet down --dir "$fleet" >/dev/null 2>&1 || echo "    (fleet down failed; run: python -m tests.pfemu fleet down --dir $fleet)"
    if [ "$status" -ne 0 ]; then
        echo "    The playbook log is in $work/ansible.log"
    else
        echo "    done: nothing left running"
    fi
    exit "$status"
}

command -v ansible-playbook >/dev/null || fail "ansible-playbook not found: run 'make demo' (it creates .venv) or put .venv/bin on PATH"
cd "$root"

# The collection must be found as netbsd.pf: use ANSIBLE_COLLECTIONS_PATH if the caller set it
# (make demo does), else the checkout itself when it already sits in ansible_collections/netbsd/pf,
# else a link to it under the demo's output directory.
if [ -z "${ANSIBLE_COLLECTIONS_PATH:-}" ]; then
    case "$root" in
    */ansible_collections/netbsd/pf) ANSIBLE_COLLECTIONS_PATH=${root%/ansible_collections/netbsd/pf} ;;
    *)
        mkdir -p "$work/collections/ansible_collections/netbsd"
        ln -sfn "$root" "$work/collections/ansible_collections/netbsd/pf"
        ANSIBLE_COLLECTIONS_PATH=$work/collections ;;
    esac
fi
export ANSIBLE_COLLECTIONS_PATH
export ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 ANSIBLE_PIPELINING=1
export ANSIBLE_LOG_PATH=$work/ansible.log

# Every run starts from fresh hosts: files a previous run left on them (the lease file of the
# reboot's hold lock, which stays in force for reboot_lease seconds) would change what it shows.
python -m tests.pfemu fleet down --dir "$fleet" >/dev/null 2>&1 || true
rm -rf "$work/captures" "$work/ansible.log" "$fleet"
mkdir -p "$work"
trap teardown EXIT

step "Starting $hosts emulated NetBSD firewalls (pf emulator behind /dev/pf, local connections)"
python -m tests.pfemu fleet up "$hosts" --flavour local --states "$states" --dir "$fleet" | relative | sed 's/^/    /'
inventory=$fleet/inventory/hosts.yml

# One line per host: state count and boot time (the emulator's clock); with "check", also
# whether the boot time moved since the first call (the host really rebooted). One status call
# for the whole fleet.
declare -A first_boot
table_sizes() {
    local listing host count boot
    listing=$(python -m tests.pfemu fleet status --dir "$fleet" | python -c 'import json, sys
for host in json.load(sys.stdin)["hosts"]:
    print(host["name"], host["states"], repr(host["boot_time"]))')
    [ "$(wc -l <<<"$listing")" -eq "$hosts" ] || fail "fleet status lists $(wc -l <<<"$listing") hosts, not $hosts"
    while read -r host count boot; do
        if [ "${1:-}" = check ]; then
            [ "$boot" != "${first_boot[$host]}" ] || fail "$host did not reboot"
            printf '    %s: %5d states, rebooted\n' "$host" "$count"
        else
            first_boot[$host]=$boot
            printf '    %s: %5d states\n' "$host" "$count"
        fi
    done <<<"$listing"
}
table_sizes

run_phase() {
    local tag=$1
    ansible-playbook -i "$inventory" "$root/tests/demo/demo.yml" --tags "$tag" \
        -e "capture_dir=$work/captures" -e "reboot_capture_dir=$work/captures" >"$work/ansible-$tag.out" 2>&1 \
        || { tail -n 30 "$work/ansible-$tag.out" >&2; fail "the $tag phase failed (full output: $work/ansible-$tag.out)"; }
    sed -n '/PLAY RECAP/,$p' "$work/ansible-$tag.out" | sed '/^$/d; s/^/    /'
}

step "Capturing every state table to the controller (netbsd.pf.capture role)"
run_phase capture
step "Fleet report (${work#"$root"/}/captures/capture-report.md, .html)"
relative <"$work/captures/capture-report.md" | sed 's/^/    /'

step "Rebooting the firewalls one by one (netbsd.pf.reboot role, serial: 1): lock + dump + reboot in one step, wait for the new boot, restore, verify"
run_phase reboot
step "Reboot report (${work#"$root"/}/captures/reboot-report.md)"
relative <"$work/captures/reboot-report.md" | sed 's/^/    /'

step "State tables after the reboots"
table_sizes check

step "Files"
relative <<EOF
    captures:     $work/captures/<host>/  (latest -> newest capture)
    reports:      $work/captures/capture-report.{md,html}, reboot-report.md
    ansible logs: $work/ansible-capture.out, $work/ansible-reboot.out
EOF
printf '\nDemo finished in %d s.\n' $((SECONDS - started))
