#!/usr/bin/env bash
# Benchmarks of netbsd.pf (make bench): the library against the in-process pf emulator at
# 10k, 100k and 1M states, the pfstate command as a process (bench_cli.py), then the fleet
# benchmark (capture vs command + fetch).
#
#   bench/run.sh                 everything (about 15-25 minutes on 2 cores)
#   BENCH_SIZES=10000,100000 bench/run.sh     smaller tables only
#   BENCH_FLEET=0 bench/run.sh   skip the fleet benchmark
#
# Results: bench/results/*.json (git-ignored); the figures of record are in docs/performance.md.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo/.venv}
collections=$("$repo/tools/collections-path.sh")
export NETBSD_PF_COLLECTIONS=$collections

sizes=${BENCH_SIZES:-10000,100000,1000000}
"$venv/bin/python" "$repo/bench/pfbench.py" --sizes "$sizes"
# The pfstate command as a whole process (start-up included) against cp, cp + fsync and cat,
# and its dump against the in-process emulator against cp + fsync of the file it wrote.
for states in ${sizes//,/ }; do
    rounds=$([ "$states" -ge 1000000 ] && echo 2 || echo 3)
    "$venv/bin/python" "$repo/bench/bench_cli.py" --states "$states" --rounds "$rounds"
    "$venv/bin/python" "$repo/bench/bench_dump_cli.py" --states "$states" --rounds "$rounds"
done
if [ "${BENCH_FLEET:-1}" != 0 ]; then
    ANSIBLE_COLLECTIONS_PATH=$collections bash "$repo/bench/fleet/run-fleet-bench.sh"
fi
