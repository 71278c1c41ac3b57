#!/usr/bin/env bash
# Fleet benchmark: the netbsd.pf.capture role against command + fetch of same-size files,
# on a local-flavour emulated fleet (BENCH_HOSTS hosts x BENCH_STATES states, forks = hosts).
# Prints a table and writes bench/results/fleet-*.json.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
hosts=${BENCH_HOSTS:-20}
states=${BENCH_STATES:-10000}
runs=${BENCH_FLEET_RUNS:-3}
fleet_dir=$repo/tests/output/bench-fleet
out=$repo/bench/results/fleet
collections=$("$repo/tools/collections-path.sh")

pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }
trap 'pfemu fleet down --dir "$fleet_dir" >/dev/null' EXIT
pfemu fleet up "$hosts" --flavour local --states "$states" --dir "$fleet_dir" >/dev/null

play() {
    local playbook=$1 started ended
    rm -rf "$out"
    mkdir -p "$out"
    started=$(date +%s.%N)
    ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_NOCOLOR=1 ANSIBLE_FORKS=$hosts \
        "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" -e bench_out="$out" \
        -e bench_states="$states" "$repo/bench/fleet/$playbook" >"$repo/bench/results/fleet-$playbook.log"
    ended=$(date +%s.%N)
    echo "$ended - $started" | bc
}

capture=() baseline=()
for _ in $(seq "$runs"); do
    capture+=("$(play capture.yml)")
    baseline+=("$(play baseline.yml)")
done
"$venv/bin/python" - "$hosts" "$states" "${capture[*]}" "${baseline[*]}" "$repo/bench/results" <<'PY'
import json, statistics, sys, time
hosts, states, capture, baseline, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
capture, baseline = [float(v) for v in capture], [float(v) for v in baseline]
c, b = statistics.median(capture), statistics.median(baseline)
print("\n## Fleet: %d local hosts x %d states, forks %d (median of %d runs)\n" % (hosts, states, hosts, len(capture)))
print("| playbook | seconds | runs |\n|---|---:|---|")
print("| netbsd.pf.capture (pfs_binary, lock during, fetch, verify, retention) | %.2f | %s |" % (c, capture))
print("| command (write same-size file) + ansible.builtin.fetch | %.2f | %s |" % (b, baseline))
print("| ratio capture / baseline | %.2fx | |" % (c / b))
path = "%s/fleet-%s.json" % (out, time.strftime("%Y%m%d-%H%M%S"))
json.dump({"hosts": hosts, "states": states, "forks": hosts, "capture_seconds": capture, "baseline_seconds": baseline,
           "median_capture": c, "median_baseline": b, "ratio": c / b}, open(path, "w"), indent=1)
print("\nJSON: %s" % path)
PY
