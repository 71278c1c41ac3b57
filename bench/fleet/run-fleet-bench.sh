#!/usr/bin/env bash
# Fleet benchmark: the netbsd.pf.capture role against command + fetch of same-size files,
# on an emulated fleet (BENCH_HOSTS hosts x BENCH_STATES states, forks = hosts): local flavour
# (ansible_connection local) by default, BENCH_FLAVOUR=ssh for sshd in network namespaces (root).
# The two playbooks alternate, BENCH_FLEET_RUNS rounds; for each: wall time, hosts per minute,
# CPU of the whole run and the controller's memory (bench/fleet/timed_play.py), and where the
# capture's time went task by task (bench/fleet/callback_plugins/task_times.py).
# Prints a table and writes bench/results/fleet-*.json.
#
# Environment: BENCH_HOSTS (20), BENCH_STATES (10000), BENCH_FLEET_RUNS (3),
# BENCH_STRATEGY (linear or free), BENCH_PIPELINING (False or True), BENCH_FLAVOUR (local or ssh), VENV.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${VENV:-$repo/.venv}
hosts=${BENCH_HOSTS:-20}
states=${BENCH_STATES:-10000}
runs=${BENCH_FLEET_RUNS:-3}
strategy=${BENCH_STRATEGY:-linear}
pipelining=${BENCH_PIPELINING:-False}
flavour=${BENCH_FLAVOUR:-local}
fleet_dir=$repo/tests/output/bench-fleet
out=$repo/bench/results/fleet
results=$repo/bench/results/fleet-runs
collections=$("$repo/tools/collections-path.sh")

pfemu() { (cd "$repo" && "$venv/bin/python" -m tests.pfemu "$@"); }
trap 'pfemu fleet down --dir "$fleet_dir" >/dev/null' EXIT
pfemu fleet up "$hosts" --flavour "$flavour" --states "$states" --dir "$fleet_dir" >/dev/null
rm -rf "$results"
mkdir -p "$results"

play() {
    local playbook=$1 round=$2
    rm -rf "$out"
    mkdir -p "$out"
    ANSIBLE_COLLECTIONS_PATH=$collections ANSIBLE_NOCOLOR=1 ANSIBLE_FORKS=$hosts \
        ANSIBLE_STRATEGY=$strategy ANSIBLE_PIPELINING=$pipelining \
        ANSIBLE_CALLBACK_PLUGINS=$repo/bench/fleet/callback_plugins ANSIBLE_CALLBACKS_ENABLED=task_times \
        BENCH_TASK_TIMES=$results/$playbook-$round-tasks.json \
        "$venv/bin/python" "$repo/bench/fleet/timed_play.py" "$results/$playbook-$round.json" "$fleet_dir/hosts/" -- \
        "$venv/bin/ansible-playbook" -i "$fleet_dir/inventory/hosts.yml" -e bench_out="$out" \
        -e bench_states="$states" "$repo/bench/fleet/$playbook" >"$repo/bench/results/fleet-$playbook.log" \
        || { echo "$playbook failed: see bench/results/fleet-$playbook.log" >&2; exit 1; }
}

for round in $(seq "$runs"); do
    play capture.yml "$round"
    play baseline.yml "$round"
done
"$venv/bin/python" - "$hosts" "$states" "$runs" "$strategy" "$pipelining" "$results" "$repo/bench/results" "$flavour" <<'PY'
import json, os, statistics, sys, time
hosts, states, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
strategy, pipelining, results, out, flavour = sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7], sys.argv[8]

def load(playbook, round_, suffix=""):
    with open(os.path.join(results, "%s-%d%s.json" % (playbook, round_, suffix))) as handle:
        return json.load(handle)

rounds = range(1, runs + 1)
capture = [load("capture.yml", r) for r in rounds]
baseline = [load("baseline.yml", r) for r in rounds]
ratios = [c["wall_seconds"] / b["wall_seconds"] for c, b in zip(capture, baseline)]
load_average = os.getloadavg()

def median(rows, key):
    return statistics.median(row[key] for row in rows)

print("\n## Fleet: %d %s hosts x %d states, forks %d, strategy %s, pipelining %s (median of %d alternating rounds; "
      "load average %.1f %.1f %.1f at the end)\n" % ((hosts, flavour, states, hosts, strategy, pipelining, runs) + load_average))
print("| playbook | seconds | hosts/min | CPU s | controller RSS, all processes MiB | largest process MiB |")
print("|---|---:|---:|---:|---:|---:|")
for name, rows in (("netbsd.pf.capture (pfs_binary, lock during, fetch, SHA-256 check, retention)", capture),
                   ("command (write same-size file) + ansible.builtin.fetch", baseline)):
    wall = median(rows, "wall_seconds")
    print("| %s | %.2f | %.0f | %.1f | %.0f | %.0f |" % (name, wall, hosts * 60 / wall, median(rows, "cpu_seconds"),
                                                      median(rows, "controller_rss_sum_mib"), median(rows, "largest_process_rss_mib")))
print("| ratio capture / baseline (median of the rounds' ratios) | %.2fx | | | | |" % statistics.median(ratios))
if strategy == "linear":    # with strategy free, tasks of different hosts overlap: no time per task
    print("\nCapture, task by task (round %d):\n" % runs)
    for task in load("capture.yml", runs, "-tasks")["tasks"]:
        print("  %6.2f s  ran %4d  skipped %4d  %s" % (task["seconds"], task["ran"], task["skipped"], task["task"]))
path = "%s/fleet-%s.json" % (out, time.strftime("%Y%m%d-%H%M%S"))
with open(path, "w") as handle:
    json.dump({"hosts": hosts, "flavour": flavour, "states": states, "forks": hosts, "strategy": strategy, "pipelining": pipelining,
               "capture": capture, "baseline": baseline, "ratios": ratios, "load_average": load_average,
               "capture_tasks": load("capture.yml", runs, "-tasks")}, handle, indent=1)
print("\nJSON: %s" % path)
PY
